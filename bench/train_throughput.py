"""Training throughput and peak memory per tune mode at the LLaVA-1.5-7B shape, through llava-ln's own step.

Counterpart of the plain transformers + PEFT baseline, bench/baseline/hf_peft_baseline.py (same shapes,
batch, warmup/median timing and one JSON line per mode, with the same keys plus "impl" and "gc_ratio"),
so both run side by side in one GPU call and compare line by line:

    python -m bench.train_throughput --size 7b --modes ln_simple,connector,ln,lora,full --gc_ratios 1.0,0.5
    python bench/baseline/hf_peft_baseline.py --size 7b --modes ln_simple,connector,ln,lora,full

What runs is what `llava-ln train` runs, minus data loading: build_mllm (on the meta device from
configs, then random bf16 weights on the GPU), apply_tune_mode, apply_kernels (--kernels, default
auto), the recompute plan (--gradient_checkpointing, default auto: training.memory.recompute picks the
fewest checkpointed blocks whose estimated peak fits --memory_budget_gib, default the GPU's free
memory minus a margin), TorchStrategy.setup (trainable fp32 masters, frozen bf16, autocast, fused
AdamW, clipping) and strategy.forward_backward + optimizer_step on a batch in the collator's
contract (576 image tokens first, then text; loss on the text). Differences from the baseline that
come from our step: the lean kernels, the fused head + loss on supervised rows only, and the
recompute plan. --gc_ratios 1.0,0.5 measures fixed shares of checkpointed blocks instead (1.0 is
the baseline's full checkpointing); --no-gc none at all. Each line also carries the plan's
`estimated_peak_gib`, to compare with the measured `peak_mem_gib`. Sizes: llava_ln.model.shapes;
--size tiny runs on a CPU (fp32).
"""
import argparse
import sys
import tempfile
import time

import torch

from bench.training_step import (
    device_batch,
    materialise,
    print_results,
    shape_model_args,
    timed_steps,
    versions_line,
)
from llava_ln.core.distributed import DistContext
from llava_ln.core.processes import forward_stop_signals
from llava_ln.kernels import apply_kernels, resolve_kernel_backend
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.model.shapes import SHAPES
from llava_ln.training.args import TrainingArguments, gradient_checkpointing_choice
from llava_ln.training.memory.policy import checkpoint_first_blocks, resolve_precision
from llava_ln.training.memory.recompute import RecomputeDecision, decide_for_model_args, default_budget_gib
from llava_ln.training.strategy import TorchStrategy
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="7b", choices=sorted(SHAPES))
    parser.add_argument("--modes", default="ln_simple,connector,ln,lora,full")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--no-gc", action="store_true", help="no gradient checkpointing at all")
    parser.add_argument("--gc_ratios", default=None, help="comma list: share of LLM blocks that recompute "
                        "(instead of --gradient_checkpointing)")
    parser.add_argument("--gradient_checkpointing", default="auto", help="auto | on | off (as llava-ln train)")
    parser.add_argument("--memory_budget_gib", type=float, default=None, help="for auto (default: free GPU memory "
                        "minus a margin; on a CPU auto checkpoints every block)")
    parser.add_argument("--kernels", default="auto", help="auto | torch | liger | none (as llava-ln train)")
    return parser.parse_args(argv)


def recompute_plan(mode: str, gc_ratio, opts, model_args: ModelArguments, precision, kernels_backend: str,
                   device) -> RecomputeDecision:
    """gc_ratio: a share of checkpointed blocks, None for none, "plan" for --gradient_checkpointing."""
    requested = "on" if isinstance(gc_ratio, float) else "off" if gc_ratio is None else \
        gradient_checkpointing_choice(opts.gradient_checkpointing)
    budget = opts.memory_budget_gib if opts.memory_budget_gib is not None else default_budget_gib(device)
    plan, _ = decide_for_model_args(requested, model_args, TuningArguments(tune_mode=mode),
                                  kernels_backend=kernels_backend, dtype=precision.compute_dtype,
                                  batch_size=opts.batch, seq=opts.seq, budget_gib=budget,
                                  ratio=gc_ratio if isinstance(gc_ratio, float) else 1.0)
    return plan


def run(mode: str, gc_ratio, opts, model_args: ModelArguments, device) -> dict:
    torch.manual_seed(0)
    # llava weighting: one micro-batch per step, whose loss (a mean) the results have always printed.
    train_args = TrainingArguments(output_dir="unused", bf16=device.type == "cuda", learning_rate=1e-5,
                                   loss_weighting="llava")
    precision = resolve_precision(train_args, device)
    started = time.time()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(precision.compute_dtype)  # meta tensors in the compute dtype: no fp32 detour
    try:
        model, spec = build_mllm(model_args, None, on_meta=True)
        model, plan = apply_tune_mode(model, TuningArguments(tune_mode=mode))
    finally:
        torch.set_default_dtype(previous)
    # Planned before the weights take GPU memory: the default budget is the free memory.
    recompute = recompute_plan(mode, gc_ratio, opts, model_args, precision,
                               resolve_kernel_backend(opts.kernels, device)[0], device)
    materialise(model, device, precision.compute_dtype)
    kernels = apply_kernels(model, opts.kernels, device)
    checkpoint_first_blocks(model, recompute.checkpointed_blocks)
    strategy = TorchStrategy(train_args, DistContext(device=device), precision)
    strategy.setup(model, plan.param_groups(model, train_args.learning_rate, train_args.weight_decay))
    unwrap(model).train()
    build_s = time.time() - started
    params = list(unwrap(model).parameters())
    n_train, n_all = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    batch = device_batch(model, spec, opts.batch, opts.seq, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def step():
        loss = strategy.forward_backward(batch, last_micro_step=True)
        strategy.optimizer_step()
        return loss.detach()

    times, losses = timed_steps(step, opts.warmup, opts.steps, device)
    loss = float(losses[-1]) if losses else float("nan")
    step_s = sorted(times)[len(times) // 2]
    result = dict(mode=mode, size=opts.size, attn=spec.attn_implementation, grad_ckpt=recompute.checkpointed_blocks > 0,
                  gc_ratio=round(recompute.checkpointed_blocks / recompute.total_blocks, 4), impl="llava-ln",
                  kernels=kernels.backend, gradient_checkpointing=recompute.requested,
                  checkpointed_blocks=recompute.checkpointed_blocks, estimated_peak_gib=recompute.estimated_peak_gib,
                  batch=opts.batch, seq=opts.seq, trainable=n_train,
                  total=n_all, trainable_pct=round(100 * n_train / n_all, 5), step_s_median=round(step_s, 4),
                  step_s_min=round(min(times), 4), step_s_max=round(max(times), 4),
                  tokens_per_s=round(opts.batch * opts.seq / step_s, 1), loss=round(loss, 4),
                  build_s=round(build_s, 1))
    if device.type == "cuda":
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main(argv=None) -> int:
    opts = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(versions_line(), flush=True)
    ratios = [None] if opts.no_gc else [float(r) for r in opts.gc_ratios.split(",")] if opts.gc_ratios else ["plan"]
    with forward_stop_signals(), tempfile.TemporaryDirectory() as root:
        model_args = shape_model_args(root, opts.size, opts.attn)
        print_results([(dict(mode=mode, size=opts.size, gc_ratio=ratio),
                        lambda mode=mode, ratio=ratio: run(mode, ratio, opts, model_args, device))
                       for mode in opts.modes.split(",") for ratio in ratios], device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
