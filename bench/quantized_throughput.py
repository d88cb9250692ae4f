"""Training throughput and peak memory on a 4-bit (or 8-bit) base, with gradient accumulation.

The GPU target: LLaVA-1.5-13B shape, `ln` at 4 bits, a batch of 16 x 2048 tokens per optimizer step
reached through gradient accumulation, peak memory at most 24 GiB (a 24 GB card), and tokens/s next
to the plain transformers + PEFT LoRA baseline at the same micro-batch (the GPU suite runs
bench/baseline/hf_peft_baseline.py --size 13b --modes lora beside it):

    python -m bench.quantized_throughput --size 13b --modes ln,ln_simple,lora --bits 4 --batch 16 --micro_batches 4,2

What runs is `llava-ln train --bits 4`'s step minus data loading: build_mllm on the meta device,
random bf16 weights on the GPU (training_step.materialise), quantize_llm_linears on the GPU (as
train.py does), apply_tune_mode (LoRA on the quantized layers is QLoRA), gradient checkpointing,
TorchStrategy (fp32 masters of what trains, autocast bf16, fused AdamW), then per optimizer step
batch/micro forward_backward calls and one optimizer_step on batches in the collator's contract.
One JSON line per (mode, micro-batch): step time, tokens/s, peak memory during the steps, the
memory held before the first step, and `llava-ln describe`'s static estimate for the same run.
--size tiny runs on a CPU (fp32), for the suite's dry run and the tests.
"""
import argparse
import gc
import sys
import tempfile
import time

import torch

from bench import training_step
from llava_ln.core.distributed import DistContext
from llava_ln.core.processes import forward_stop_signals
from llava_ln.model.builder import build_mllm
from llava_ln.model.parts import unwrap
from llava_ln.model.quantize import quant_settings, quantize_llm_linears, quantized_footprint
from llava_ln.model.shapes import SHAPES
from llava_ln.training.args import TrainingArguments
from llava_ln.training.memory.policy import enable_gradient_checkpointing, resolve_precision
from llava_ln.training.memory.policy import static_memory_per_gpu as static_memory
from llava_ln.training.strategy import TorchStrategy
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

TARGET_PEAK_GIB = 24.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="13b", choices=sorted(SHAPES))
    parser.add_argument("--modes", default="ln")
    parser.add_argument("--bits", type=int, default=4, choices=(4, 8))
    parser.add_argument("--quant_type", default="nf4", choices=("nf4", "fp4"))
    parser.add_argument("--double_quant", type=int, default=1, choices=(0, 1))
    parser.add_argument("--batch", type=int, default=16, help="samples per optimizer step")
    parser.add_argument("--micro_batches", default="4,2", help="comma list of micro-batch sizes to try")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--gc_ratio", type=float, default=1.0, help="share of LLM blocks that recompute")
    return parser.parse_args(argv)


def build(mode: str, opts, model_args, device, precision):
    """The quantized model with its tuning plan, ready to train, as train.py builds it."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(precision.compute_dtype)  # meta tensors in the compute dtype: no fp32 detour
    try:
        model, spec = build_mllm(model_args, None, on_meta=True)
    finally:
        torch.set_default_dtype(previous)
    settings = quant_settings(opts.bits, opts.quant_type, bool(opts.double_quant))
    footprint = quantized_footprint(model, settings)
    training_step.materialise(model, device, precision.compute_dtype)
    quantize_llm_linears(model, settings, device=device)
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode=mode))
    return model, spec, plan, settings, footprint


def run(mode: str, micro: int, opts, model_args, device) -> dict:
    if opts.batch % micro:
        raise ValueError(f"--batch {opts.batch} is not a multiple of the micro-batch {micro}")
    accumulation = opts.batch // micro
    # llava weighting: each micro-batch's mean weighs 1 / accumulation, as in the results recorded so far.
    train_args = TrainingArguments(output_dir="unused", bf16=device.type == "cuda", learning_rate=1e-5,
                                   gradient_accumulation_steps=accumulation, per_device_train_batch_size=micro,
                                   loss_weighting="llava")
    precision = resolve_precision(train_args, device)
    started = time.time()
    model, spec, plan, settings, footprint = build(mode, opts, model_args, device, precision)
    enable_gradient_checkpointing(model, opts.gc_ratio)
    strategy = TorchStrategy(train_args, DistContext(device=device), precision)
    strategy.setup(model, plan.param_groups(model, train_args.learning_rate, train_args.weight_decay))
    unwrap(model).train()
    build_s = time.time() - started
    counts = plan.counts()
    trainable = sum(c["trainable"] for c in counts.values())
    total = sum(c["total"] for c in counts.values())
    estimate = static_memory(total - trainable, trainable, "torch", num_gpus=1, bf16=precision.bf16,
                             quantized_params=footprint.params, quantized_bytes=footprint.bytes)
    batch = training_step.device_batch(model, spec, micro, opts.seq, device)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        held_gib = torch.cuda.memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()

    def step() -> list:
        losses = [float(strategy.forward_backward(batch, last_micro_step=index == accumulation - 1))
                  for index in range(accumulation)]
        strategy.optimizer_step()
        return losses

    times, per_step = training_step.timed_steps(step, opts.warmup, opts.steps, device)
    losses = [loss for step_losses in per_step for loss in step_losses]
    step_s = sorted(times)[len(times) // 2]
    result = dict(mode=mode, size=opts.size, impl="llava-ln", quantization=settings.describe(), bits=opts.bits,
                  batch=opts.batch, micro_batch=micro, accumulation=accumulation, seq=opts.seq,
                  gc_ratio=opts.gc_ratio, attn=spec.attn_implementation, trainable=trainable, total=total,
                  quantized_params=footprint.params, step_s_median=round(step_s, 4),
                  tokens_per_s=round(opts.batch * opts.seq / step_s, 1), loss_first=round(losses[0], 4),
                  loss_last=round(losses[-1], 4), static_estimate_gib=estimate["total_static"],
                  build_s=round(build_s, 1))
    if device.type == "cuda":
        result.update(peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2), held_gib=round(held_gib, 2),
                      gpu=torch.cuda.get_device_name(), target_peak_gib=TARGET_PEAK_GIB)
    return result


def main(argv=None) -> int:
    opts = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(training_step.versions_line("bitsandbytes"), flush=True)
    with forward_stop_signals(), tempfile.TemporaryDirectory() as root:
        model_args = training_step.shape_model_args(root, opts.size, opts.attn)
        micro_batches = [int(m) for m in opts.micro_batches.split(",")]
        runs = [(dict(mode=mode, size=opts.size, micro_batch=micro),
                 lambda mode=mode, micro=micro: run(mode, micro, opts, model_args, device))
                for mode in opts.modes.split(",") for micro in micro_batches]
        training_step.print_results(runs, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
