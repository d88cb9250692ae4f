"""The real training step on the meta device: bytes kept for backward and FLOPs executed, exactly, with no weights.

`meta_training_model` builds the model as training does (build_start_model, apply_tune_mode, apply_kernels)
but on the meta device, so a 13B step is accounted on a laptop in seconds; `measure_step` runs
TrainingModule's forward and backward on it (the same loss path training uses: fused head + loss
when kernels are applied) with the blocks checkpointed as asked, counting

  * every tensor autograd saves for backward (kernels.accounting.SavedTensorBytes; parameters
    excluded), split by LLM block with module hooks, both as every save (`packed`, what
    bench/baseline/step_account.py reports) and as memory kept alive (`unique`). A checkpointed
    block's count is what the checkpoint keeps: its inputs;
  * FLOPs executed (torch's FlopCounterMode): forward, the recompute of checkpointed blocks
    (which stops at the block's last saved tensor) and backward.

Choices that make the count the GPU's:
  * attention runs as a flash kernel stores it (q, k, v, output, log-sum-exp) when training uses
    sdpa or flash_attention_2 (both run such kernels on a GPU), eager attention as it is;
  * the module runs in the compute dtype throughout, as DeepSpeed runs it. The plain PyTorch
    strategy keeps fp32 masters of trainable tensors under autocast instead; the activations it
    saves have the same dtypes (the embeddings are cast to the autocast dtype in model.forward,
    and every matmul input is in the compute dtype), so only the static memory differs, and that
    is counted separately (memory.static_memory_per_gpu);
  * lean kernels count as the torch backend: liger's fused kernels save the same or less;
  * the batch: the ids and labels are real CPU tensors (the loss selects rows by their values),
    everything else is meta. `synthetic_batch` is the collator's contract at a given shape: one
    image per sample, its placeholders after BOS, every later token supervised (the most rows the
    head can see).
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedTokenizerBase

from llava_ln.checkpoint.run_start import build_start_model
from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.kernels import apply_kernels
from llava_ln.kernels.accounting import SavedTensorBytes, register_flash_like_attention
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import MultimodalSpec
from llava_ln.model.parts import decoder_layers_of, language_model_of, unwrap
from llava_ln.training.memory.policy import checkpoint_first_blocks
from llava_ln.training.strategy import TrainingModule
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import TuningPlan, apply_tune_mode

_FLASH_FAMILY = ("sdpa", "flash_attention_2")


def meta_training_model(model_args: ModelArguments, tuning_args: TuningArguments, kernels_backend: str, *,
                        dtype: torch.dtype, tokenizer: PreTrainedTokenizerBase | None = None,
                        ) -> tuple[nn.Module, MultimodalSpec, TuningPlan]:
    """(model, spec, plan) on the meta device, tuned and with kernels as training applies them."""
    model, spec = build_start_model(model_args, tokenizer, torch.float32, on_meta=True)
    model, plan = apply_tune_mode(model, tuning_args)
    unwrap(model).to(dtype)
    llm_config = language_model_of(model).config
    if llm_config._attn_implementation in _FLASH_FAMILY:
        llm_config._attn_implementation = register_flash_like_attention()
    apply_kernels(model, "none" if kernels_backend == "none" else "torch", device="meta")
    unwrap(model).train()
    return model, spec, plan


def synthetic_batch(spec: MultimodalSpec, *, image_size: int, vocab_size: int, batch: int, seq: int,
                    pixel_device: str | torch.device = "meta", pixel_dtype: torch.dtype = torch.float32) -> dict:
    """One image per sample (when it fits in `seq`), its placeholders after BOS, loss on every later token."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, vocab_size - 1, (batch, seq), generator=generator)
    input_ids[input_ids == spec.image_token_id] = 3
    labels = input_ids.clone()
    n_image = spec.num_image_tokens
    with_image = seq > n_image + 1
    if with_image:
        input_ids[:, 1:1 + n_image] = spec.image_token_id
        labels[:, :1 + n_image] = IGNORE_INDEX
    else:
        labels[:, :1] = IGNORE_INDEX
    images = batch if with_image else 0
    if pixel_device == "meta":
        pixels = torch.empty(images, 3, image_size, image_size, device="meta", dtype=pixel_dtype)
    else:
        pixels = torch.randn(images, 3, image_size, image_size, generator=generator).to(pixel_device, pixel_dtype)
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixels,
            "image_counts": torch.full((batch,), int(with_image)), "sample_ids": [f"synthetic{i}" for i in range(batch)]}


def batch_for(model: nn.Module, spec: MultimodalSpec, *, batch: int, seq: int) -> dict:
    """synthetic_batch shaped for `model` (its image size, vocabulary and vision tower's dtype)."""
    llava = unwrap(model)
    dtype = next(llava.model.vision_tower.parameters()).dtype
    return synthetic_batch(spec, image_size=llava.config.vision_config.image_size,
                           vocab_size=llava.config.text_config.vocab_size, batch=batch, seq=seq, pixel_dtype=dtype)


@dataclass(frozen=True, kw_only=True)
class StepMeasure:
    """One meta-device step: bytes saved (per LLM block and outside them) and FLOPs executed."""

    tokens: int
    checkpointed: int
    block_packed: tuple  # per block, every save counted
    block_unique: tuple  # per block, each tensor kept alive counted once
    other_packed: int  # outside the blocks: embeddings, vision tower and connector, head + loss
    other_unique: int
    forward_flops: int
    total_flops: int  # forward + recompute + backward

    @property
    def saved_unique(self) -> int:
        return sum(self.block_unique) + self.other_unique


class BlockScopes:
    """Forward hooks that name the LLM block running (its index) on a SavedTensorBytes counter."""

    def __init__(self, blocks, counter: SavedTensorBytes):
        self.handles = []
        for index, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._enter(counter, index)))
            self.handles.append(block.register_forward_hook(self._leave(counter)))

    @staticmethod
    def _enter(counter, index):
        def hook(module, args):
            counter.scope = index
        return hook

    @staticmethod
    def _leave(counter):
        def hook(module, args, output):
            counter.scope = None
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def measure_step(model, batch: dict, checkpointed: int) -> StepMeasure:
    """Forward + backward of TrainingModule(model) on `batch` with the first `checkpointed` blocks recomputing."""
    blocks = decoder_layers_of(model)
    checkpoint_first_blocks(model, checkpointed)
    counter = SavedTensorBytes(model)
    scopes = BlockScopes(blocks, counter)
    flops = FlopCounterMode(display=False)
    try:
        with flops:
            with counter:
                loss = TrainingModule(model)(batch)
            forward = flops.get_total_flops()
            loss.backward()
    finally:
        scopes.remove()
    model.zero_grad(set_to_none=True)
    per_block = [counter.by_scope.get(index, [0, 0]) for index in range(len(blocks))]
    other = counter.by_scope.get(None, [0, 0])
    return StepMeasure(tokens=batch["input_ids"].numel(), checkpointed=checkpointed,
                       block_packed=tuple(p for p, _ in per_block), block_unique=tuple(u for _, u in per_block),
                       other_packed=other[0], other_unique=other[1], forward_flops=forward,
                       total_flops=flops.get_total_flops())
