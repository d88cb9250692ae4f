"""Exact, machine-independent cost of one training step at the LLaVA-1.5 shape: llava-ln's real step vs plain transformers.

    python -m bench.step_cost --shape llava-7b --mode ln --batch 8 --seq 2048 \
        [--gradient_checkpointing on|off|auto] [--memory_budget_gib G] [--kernels auto|torch|none] --json

Runs on the meta device: no weights exist and nothing is computed, so a 13B step costs seconds on a CPU.
llava-ln's side is the project's own training step: the model built as `llava-ln train` builds it
(build_mllm, apply_tune_mode, apply_kernels), TrainingModule's loss (the fused head + loss when kernels
are applied), the blocks checkpointed as --gradient_checkpointing decides (auto: training.memory.recompute's
plan for --memory_budget_gib, plain PyTorch strategy on one GPU, bf16). The baseline is plain
transformers' LlavaForConditionalGeneration (+ PEFT LoRA r128 for lora) with its own loss on full
logits, trainable tensors chosen as bench/baseline/hf_peft_baseline.py chooses them, no checkpointing:
the counting method of bench/baseline/step_account.py, re-implemented. Both sides count attention as a
flash kernel stores it (q, k, v, output, log-sum-exp) and run the module in bf16.

Prints ONE JSON object. Per token of the micro-batch (batch x seq): `saved_bytes_per_token_per_block`
(every save of the block that saves most, when it keeps its activations: the figure step_account.py
reports), `flops_per_token` executed (forward, recompute, backward), `recompute_flops_per_token`,
`checkpointed_blocks`, `estimated_peak_gib` (training.memory.recompute's estimate: static + kept + working),
and a `baseline` object with the same keys. --shape tiny runs a toy-sized model (for tests).
"""
import argparse
import json
import sys
import tempfile
import time

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from bench import hf_baseline
from bench.training_step import shape_model_args
from llava_ln.core.processes import forward_stop_signals
from llava_ln.kernels.accounting import register_flash_like_attention
from llava_ln.training.args import gradient_checkpointing_choice
from llava_ln.training.memory.policy import GIB
from llava_ln.training.memory.recompute import (
    StepMemory,
    decide_from_memory,
    head_working_bytes,
    static_bytes_of,
    step_memory,
)
from llava_ln.training.memory.step_account import BlockScopes, batch_for, measure_step, meta_training_model
from llava_ln.tuning.args import TuningArguments

SHAPES = {"llava-7b": "7b", "llava-13b": "13b", "tiny": "tiny"}  # --shape -> llava_ln.model.shapes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llava-7b", choices=sorted(SHAPES))
    parser.add_argument("--mode", default="ln", choices=hf_baseline.MODES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--gradient_checkpointing", default="auto", help="on | off | auto")
    parser.add_argument("--memory_budget_gib", type=float, default=None)
    parser.add_argument("--kernels", default="auto", choices=("auto", "torch", "none"),
                        help="auto and torch both count the torch kernels (liger's save the same or less)")
    parser.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    return parser.parse_args(argv)


def _per_token(value, tokens: int, digits: int = 1):
    return round(value / tokens, digits)


def _summary(memory: StepMemory, checkpointed: int, total_flops: int) -> dict:
    tokens = memory.tokens
    return {
        "saved_bytes_per_token_per_block": _per_token(max(memory.block_packed), tokens),
        "kept_bytes_per_token_per_block": _per_token(max(memory.kept), tokens),
        "checkpointed_block_bytes_per_token": _per_token(max(memory.kept_checkpointed), tokens),
        "flops_per_token": _per_token(total_flops, tokens, 0),
        "recompute_flops_per_token": _per_token(total_flops - memory.flops_without_recompute, tokens, 0),
        "flops_ratio_to_no_recompute": round(total_flops / memory.flops_without_recompute, 4),
        "checkpointed_blocks": checkpointed,
        "blocks": memory.blocks,
        "estimated_peak_gib": round(memory.peak(checkpointed) / GIB, 6),
        "static_gib": round(memory.static / GIB, 6),
    }


def llava_ln_step(model_args, opts) -> dict:
    requested = gradient_checkpointing_choice(opts.gradient_checkpointing)
    backend = "none" if opts.kernels == "none" else "torch"
    model, spec, _ = meta_training_model(model_args, TuningArguments(tune_mode=opts.mode), backend,
                                         dtype=torch.bfloat16)
    static = static_bytes_of(model, "torch", 1, bf16=True)
    memory = step_memory(model, spec, batch_size=opts.batch, seq=opts.seq, static_bytes=static, loss_backend=backend,
                         dtype=torch.bfloat16, fp32_masters=True)
    plan = decide_from_memory(requested, memory, opts.memory_budget_gib)
    count = plan.checkpointed_blocks
    if count == 0:
        total = memory.flops_without_recompute
    else:
        total = measure_step(model, batch_for(model, spec, batch=opts.batch, seq=opts.seq), count).total_flops
    return {**_summary(memory, count, total), "kernels": backend, "gradient_checkpointing": requested,
            "plan": plan.reason}, spec


def baseline_step(model_args, opts, spec) -> dict:
    """Plain transformers (+ PEFT), its own loss on full logits, no checkpointing, on the meta device."""
    from transformers import AutoConfig, CLIPVisionConfig

    text = AutoConfig.from_pretrained(model_args.model_name_or_path)
    text.vocab_size += 1  # the <image> token, appended as the baseline does
    config = LlavaConfig(vision_config=CLIPVisionConfig.from_pretrained(model_args.vision_tower), text_config=text,
                         image_token_index=text.vocab_size - 1, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    with torch.device("meta"):
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.model.language_model.config._attn_implementation = register_flash_like_attention()
    for name, param in model.named_parameters():
        param.requires_grad_(hf_baseline.trains(name, opts.mode))
    if opts.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=128, lora_alpha=256, lora_dropout=0.05,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"))
        for name, param in model.named_parameters():
            param.requires_grad_(param.requires_grad or "multi_modal_projector" in name)
        model.to(torch.bfloat16)  # PEFT makes adapters fp32; the count runs in the compute dtype throughout
    model.train()
    batch = batch_for(model, spec, batch=opts.batch, seq=opts.seq)
    layers = model.get_base_model().model.language_model.layers if opts.mode == "lora" else \
        model.model.language_model.layers
    from torch.utils.flop_counter import FlopCounterMode

    from llava_ln.kernels.accounting import SavedTensorBytes

    counter, flops = SavedTensorBytes(model), FlopCounterMode(display=False)
    scopes = BlockScopes(layers, counter)
    try:
        with flops:
            with counter:
                loss = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"].to(torch.bfloat16),
                             labels=batch["labels"]).loss
            forward = flops.get_total_flops()
            loss.backward()
    finally:
        scopes.remove()
    per_block = [counter.by_scope.get(i, [0, 0]) for i in range(len(layers))]
    other = counter.by_scope.get(None, [0, 0])
    kept = tuple(u for _, u in per_block)
    tokens = batch["input_ids"].numel()
    memory = StepMemory(tokens=tokens, kept=kept, kept_checkpointed=kept, other=other[1],
                        static=static_bytes_of(model, "torch", 1, bf16=True),
                        head_working=head_working_bytes(model, tokens, loss_backend="none", dtype=torch.bfloat16,
                                                        fp32_masters=True),
                        block_packed=tuple(p for p, _ in per_block), forward_flops=forward,
                        flops_without_recompute=flops.get_total_flops(), recompute_flops_per_block=0.0)
    return {**_summary(memory, 0, memory.flops_without_recompute), "checkpointed_block_bytes_per_token": None,
            "kernels": "none (transformers)", "gradient_checkpointing": "off"}


def main(argv=None) -> int:
    opts = parse_args(argv)
    started = time.time()
    import transformers

    with forward_stop_signals(), tempfile.TemporaryDirectory() as root:
        model_args = shape_model_args(root, SHAPES[opts.shape], "sdpa")
        ours, spec = llava_ln_step(model_args, opts)
        baseline = baseline_step(model_args, opts, spec)
    result = {"shape": opts.shape, "mode": opts.mode, "batch": opts.batch, "seq": opts.seq,
              "tokens_per_micro_batch": opts.batch * opts.seq, "dtype": "bf16",
              "memory_budget_gib": opts.memory_budget_gib, **ours, "baseline": baseline,
              "machine": f"meta device (no weights, no compute): machine-independent; torch {torch.__version__}, "
                         f"transformers {transformers.__version__}",
              "seconds": round(time.time() - started, 1)}
    print(json.dumps(result) if opts.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
