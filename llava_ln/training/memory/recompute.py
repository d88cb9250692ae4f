"""How many LLM blocks recompute in backward (--gradient_checkpointing true|false|auto), and the peak it implies.

`auto` picks the fewest checkpointed blocks (the first ones, as --gradient_checkpointing_ratio does)
whose estimated peak memory per device fits --memory_budget_gib. The estimate adds up:
  static   weights, gradients and optimizer states (memory.static_memory_per_gpu for the run's
           strategy and world size);
  kept     what the step keeps from forward to backward, measured exactly on the meta device
           (step_account) at per_device_train_batch_size x model_max_length with one image per
           sample (with --packing: one row of max_tokens_per_batch tokens, training.packing's
           micro_batch_shape; a block's activations grow with the tokens, not the rows): each block that keeps its activations holds its saved bytes, a checkpointed
           block only its inputs, plus the rest of the model (vision tower, connector,
           embeddings, head + loss; a tower that trains keeps its layers' activations, or only
           their inputs once checkpointing is on);
  working  the larger of the head + loss working set at the end of the forward (the fused
           loss's chunk of fp32 logits, its compute-dtype gradient and, when the head trains, the
           fp32 head gradient it accumulates; for the unfused loss the [rows, vocab] logits in the
           compute dtype and in fp32, and their gradients in both) and one block's backward (gradient buffers about the size of its saved
           bytes, plus its recomputed activations when it is checkpointed).
The default budget is the device's free memory minus a margin (10% of the card, at least 2 GiB) for
the allocator's fragmentation and the libraries' workspaces. A CPU has no device memory to plan for:
there `auto` without a budget checkpoints every block. The figure is an estimate, printed by
`llava-ln describe` and bench/step_cost.py; bench/gpu_suite.sh measures the real peak next to it.
"""
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llava_ln.core.distributed import DistContext
from llava_ln.data.args import DataArguments
from llava_ln.kernels.fused_loss import default_chunk_rows
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import MultimodalSpec
from llava_ln.model.parts import decoder_layers_of, lm_head_of
from llava_ln.model.quantize import QuantizedFootprint, quant_settings, quantized_footprint
from llava_ln.training.args import TrainingArguments, gradient_checkpointing_choice
from llava_ln.training.memory.policy import GIB, Precision, checkpoint_first_blocks, static_memory_per_gpu
from llava_ln.training.memory.step_account import batch_for, measure_step, meta_training_model
from llava_ln.training.packing import micro_batch_shape
from llava_ln.tuning.args import TuningArguments

MARGIN_SHARE, MARGIN_MIN_GIB = 0.10, 2.0


@dataclass(frozen=True, kw_only=True)
class StepMemory:
    """Everything the estimate needs, in bytes per device, for one micro-batch shape."""

    tokens: int
    kept: tuple  # per block, keeping its activations
    kept_checkpointed: tuple  # per block, checkpointed (its inputs)
    other: int  # kept outside the blocks
    static: int
    head_working: int
    block_packed: tuple  # per block, every save (the figure bench/baseline/step_account.py reports)
    forward_flops: int
    flops_without_recompute: int
    recompute_flops_per_block: float
    # Kept outside the blocks once checkpointing is on: a tower that trains then recomputes its layers too
    # (memory.policy.checkpoint_first_blocks); None: the same as `other`.
    other_checkpointed: int | None = None

    @property
    def blocks(self) -> int:
        return len(self.kept)

    def peak(self, checkpointed: int) -> int:
        other = self.other if not checkpointed or self.other_checkpointed is None else self.other_checkpointed
        kept = sum(self.kept_checkpointed[:checkpointed]) + sum(self.kept[checkpointed:]) + other
        block_backward = max(self.kept, default=0) * (2 if checkpointed else 1)
        return self.static + kept + max(self.head_working, block_backward)

    def fewest_checkpointed_within(self, budget: int) -> int | None:
        for count in range(self.blocks + 1):
            if self.peak(count) <= budget:
                return count
        return None


def head_working_bytes(model: nn.Module, rows: int, *, loss_backend: str, dtype: torch.dtype, fp32_masters: bool) -> int:
    """The head + loss working set at the end of the forward (see the module docstring)."""
    weight = lm_head_of(model).weight
    vocab, hidden = weight.shape
    size = torch.tensor([], dtype=dtype).element_size()
    if loss_backend == "none":  # logits in the compute dtype and fp32, then their two gradients
        return rows * vocab * 2 * (4 + size)
    chunk = min(rows, default_chunk_rows(vocab))
    working = chunk * vocab * (4 + size)
    if weight.requires_grad:
        working += vocab * hidden * 4  # the fp32 gradient the fused loss accumulates
        if fp32_masters and size != 4:
            working += vocab * hidden * size  # the master cast to the compute dtype for the matmuls
    return working


def step_memory(model: nn.Module, spec: MultimodalSpec, *, batch_size: int, seq: int, static_bytes: int,
                loss_backend: str, dtype: torch.dtype, fp32_masters: bool) -> StepMemory:
    """Measure a meta model (step_account.meta_training_model) with no block and with every block checkpointed."""
    batch = batch_for(model, spec, batch=batch_size, seq=seq)
    blocks = len(decoder_layers_of(model))
    plain = measure_step(model, batch, 0)
    recomputing = measure_step(model, batch, blocks)
    checkpoint_first_blocks(model, 0)
    rows = int((batch["labels"][:, 1:] != -100).sum())
    return StepMemory(tokens=plain.tokens, kept=plain.block_unique, kept_checkpointed=recomputing.block_unique,
                      other=plain.other_unique, other_checkpointed=recomputing.other_unique, static=static_bytes,
                      head_working=head_working_bytes(model, rows, loss_backend=loss_backend, dtype=dtype,
                                                      fp32_masters=fp32_masters),
                      block_packed=plain.block_packed, forward_flops=plain.forward_flops,
                      flops_without_recompute=plain.total_flops,
                      recompute_flops_per_block=(recomputing.total_flops - plain.total_flops) / max(blocks, 1))


def static_bytes_of(model: nn.Module, strategy: str, num_gpus: int, *, bf16: bool, trainable_savings: int = 0,
                    quantized: QuantizedFootprint | None = None) -> int:
    """quantized: the block linears a --bits run stores quantized (model.quantize.quantized_footprint)."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params) - trainable
    quantized = quantized or QuantizedFootprint(0, 0.0)
    static = static_memory_per_gpu(frozen, trainable, strategy, num_gpus=num_gpus, bf16=bf16,
                                   quantized_params=quantized.params, quantized_bytes=quantized.bytes)
    return int(static["total_static"] * GIB) - trainable_savings


def default_budget_gib(device) -> float | None:
    """Free memory of a CUDA device minus the margin; None elsewhere."""
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return (free - max(MARGIN_SHARE * total, MARGIN_MIN_GIB * GIB)) / GIB


@dataclass(kw_only=True)
class RecomputeDecision:
    """What --gradient_checkpointing decided: for the log, run_config.json and describe."""

    requested: str  # on | off | auto
    checkpointed_blocks: int
    total_blocks: int
    reason: str
    budget_gib: float | None = None
    estimated_peak_gib: float | None = None
    tokens_per_micro_batch: int | None = None
    saved_bytes_per_token_per_block: float | None = None

    def as_dict(self) -> dict:
        return dict(vars(self))

    def summary(self) -> str:
        peak = f", estimated peak {self.estimated_peak_gib:.1f} GiB" if self.estimated_peak_gib is not None else ""
        return (f"gradient checkpointing {self.requested}: {self.checkpointed_blocks} of {self.total_blocks} LLM "
                f"blocks recompute{peak} ({self.reason})")


def decide_from_memory(requested: str, memory: StepMemory, budget_gib: float | None, *,
                     ratio: float = 1.0) -> RecomputeDecision:
    """The decision for `requested` given a measured StepMemory (auto: the fewest blocks within the budget)."""
    blocks = memory.blocks
    if requested == "off":
        count, reason = 0, "requested"
    elif requested == "on":
        count, reason = round(ratio * blocks), f"requested (ratio {ratio:g})"
    elif budget_gib is None:
        count, reason = blocks, "auto without a memory budget (no CUDA device, no --memory_budget_gib): every block"
    else:
        fewest = memory.fewest_checkpointed_within(int(budget_gib * GIB))
        if fewest is None:
            count = blocks
            remedy = ("the static memory alone exceeds it: shard with --deepspeed over more GPUs"
                      if memory.static > budget_gib * GIB else
                      "lower the tokens per micro-batch (--per_device_train_batch_size or --model_max_length; "
                      "--max_tokens_per_batch with --packing)")
            reason = (f"auto: even with every block checkpointed the estimate exceeds the {budget_gib:.1f} GiB "
                      f"budget; {remedy}")
        else:
            count, reason = fewest, f"auto: the fewest blocks whose estimate fits {budget_gib:.1f} GiB"
    per_block = max(memory.block_packed, default=0) / max(memory.tokens, 1)
    return RecomputeDecision(requested=requested, checkpointed_blocks=count, total_blocks=blocks, reason=reason,
                         budget_gib=None if budget_gib is None else round(budget_gib, 2),
                         estimated_peak_gib=round(memory.peak(count) / GIB, 4), tokens_per_micro_batch=memory.tokens,
                         saved_bytes_per_token_per_block=round(per_block, 1))


def decide_for_model_args(requested: str, model_args, tuning_args, *, kernels_backend: str, dtype: torch.dtype,
                        batch_size: int, seq: int, budget_gib: float | None, strategy: str = "torch",
                        num_gpus: int = 1, ratio: float = 1.0, tokenizer=None, trainable_savings: int = 0):
    """(RecomputeDecision, StepMemory) for a run described by its flags, measured on a meta copy of its model."""
    model, spec, _ = meta_training_model(model_args, tuning_args, kernels_backend, dtype=dtype, tokenizer=tokenizer)
    bf16 = dtype != torch.float32
    quantized = quantized_footprint(model, quant_settings(model_args.bits, model_args.quant_type,
                                                          model_args.double_quant))  # --bits 4|8
    static = static_bytes_of(model, strategy, num_gpus, bf16=bf16, trainable_savings=trainable_savings,
                             quantized=quantized)
    memory = step_memory(model, spec, batch_size=batch_size, seq=seq, static_bytes=static, loss_backend=kernels_backend,
                         dtype=dtype, fp32_masters=strategy == "torch")
    return decide_from_memory(requested, memory, budget_gib, ratio=ratio), memory


def strategy_kind(args) -> str:
    """torch, zero2 (ZeRO-1/2: weights whole on every rank) or zero3, from --deepspeed's config."""
    if not args.deepspeed:
        return "torch"
    from llava_ln.training.zero.strategy import load_zero_config

    stage = load_zero_config(args.deepspeed).get("zero_optimization", {}).get("stage", 0)
    return "zero3" if stage == 3 else "zero2"


def resolve_recompute(args: TrainingArguments, model: nn.Module, model_args: ModelArguments, *,
                      data_args: DataArguments, tuning_args: TuningArguments, kernels_backend: str,
                      precision: Precision, context: DistContext, tokenizer: PreTrainedTokenizerBase | None = None,
                      trainable_savings: int = 0) -> RecomputeDecision:
    """The training run's decision; only `auto` with a budget measures (a meta copy of the model, seconds at 7B)."""
    requested = gradient_checkpointing_choice(args.gradient_checkpointing)
    blocks = len(decoder_layers_of(model))
    budget = args.memory_budget_gib if args.memory_budget_gib is not None else default_budget_gib(context.device)
    if requested != "auto" or budget is None:
        count = {"off": 0, "on": round(args.gradient_checkpointing_ratio * blocks)}.get(requested, blocks)
        reason = ("auto without a memory budget (no CUDA device, no --memory_budget_gib): every block"
                  if requested == "auto" else "requested")
        return RecomputeDecision(requested=requested, checkpointed_blocks=count, total_blocks=blocks, reason=reason)
    rows, tokens_per_row = micro_batch_shape(args, data_args.model_max_length)
    decision, _ = decide_for_model_args(
        requested, model_args, tuning_args, kernels_backend=kernels_backend, dtype=precision.compute_dtype,
        batch_size=rows, seq=tokens_per_row, budget_gib=budget,
        strategy=strategy_kind(args), num_gpus=context.world_size, tokenizer=tokenizer,
        trainable_savings=trainable_savings)
    return decision

