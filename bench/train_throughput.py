"""Training throughput and peak memory per tune mode at the LLaVA-1.5-7B shape, through llava-ln's own step.

Counterpart of ../shared/bench/hf_peft_baseline.py (same shapes, batch, warmup/median timing and
one JSON line per mode, with the same keys plus "impl" and "gc_ratio"), so both run side by side
in one GPU call and compare line by line:

    python bench/train_throughput.py --size 7b --modes ln_simple,connector,ln,lora,full --gc_ratios 1.0,0.5
    python ../shared/bench/hf_peft_baseline.py --size 7b --modes ln_simple,connector,ln,lora,full

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
`estimated_peak_gib`, to compare with the measured `peak_mem_gib`. --size tiny runs on a CPU (fp32).
"""
import argparse
import gc
import json
import os
import sys
import tempfile
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llava_ln.core.distributed import DistContext  # noqa: E402
from llava_ln.kernels import apply_kernels, resolve_kernel_backend  # noqa: E402
from llava_ln.model.args import ModelArguments  # noqa: E402
from llava_ln.model.builder import build_mllm  # noqa: E402
from llava_ln.model.parts import unwrap  # noqa: E402
from llava_ln.training.args import (
    TrainingArguments,  # noqa: E402
    gradient_checkpointing_choice,  # noqa: E402
)
from llava_ln.training.memory.policy import checkpoint_first_blocks, resolve_precision  # noqa: E402
from llava_ln.training.memory.recompute import RecomputePlan, default_budget_gib, plan_for_model_args  # noqa: E402
from llava_ln.training.strategy import TorchStrategy  # noqa: E402
from llava_ln.tuning.args import TuningArguments  # noqa: E402
from llava_ln.tuning.groups import is_norm_module  # noqa: E402
from llava_ln.tuning.plan import apply_tune_mode  # noqa: E402

CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)
SIZES = {
    "7b": (dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096), CLIP_L_336),
    "13b": (dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                 num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096), CLIP_L_336),
    "1b": (dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096), CLIP_L_336),
    "tiny": (dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512),
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
                  patch_size=14)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="7b", choices=sorted(SIZES))
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


def write_configs(root: str, size: str) -> ModelArguments:
    text, vision = SIZES[size]
    LlamaConfig(**text).save_pretrained(os.path.join(root, "llm"))
    CLIPVisionConfig(**vision).save_pretrained(os.path.join(root, "vision"))
    return ModelArguments(model_name_or_path=os.path.join(root, "llm"), vision_tower=os.path.join(root, "vision"),
                          mm_projector_type="mlp2x_gelu")


def materialise(model, device, dtype) -> None:
    """Meta model -> random weights on device: norms 1, biases 0, everything else N(0, 0.02).

    transformers' initialize_weights() fills the buffers (rotary frequencies, CLIP position
    ids); parameters are drawn here for all of them, since its per-tensor "already
    initialised" flags can survive from the meta build and leave some tensors empty.
    """
    model.to_empty(device=device)
    llava = unwrap(model)
    llava.initialize_weights()
    with torch.no_grad():
        norm_params = {id(p) for m in llava.modules() if is_norm_module(m) for p in m.parameters(recurse=False)}
        for name, param in llava.named_parameters():
            if id(param) in norm_params:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02)
        for name, buffer in llava.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
            elif buffer.is_floating_point() and not torch.isfinite(buffer).all():
                raise RuntimeError(f"buffer {name} was not initialised by this transformers version")
    model.to(dtype)


def synthetic_batch(spec, vocab_size: int, image_size: int, batch: int, seq: int, device) -> dict:
    """THE batch contract: one image per sample, its placeholders right after BOS, loss on the text after it."""
    generator = torch.Generator().manual_seed(1)
    n_image = spec.num_image_tokens
    input_ids = torch.randint(3, vocab_size - 1, (batch, seq), generator=generator)
    input_ids[:, 1:1 + n_image] = spec.image_token_id
    labels = input_ids.clone()
    labels[:, :1 + n_image] = -100
    return {
        "input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=generator).to(device),
        "image_counts": torch.ones(batch, dtype=torch.long, device=device),
        "sample_ids": [f"bench{i}" for i in range(batch)],
    }


def recompute_plan(mode: str, gc_ratio, opts, model_args: ModelArguments, precision, kernels_backend: str,
                   device) -> RecomputePlan:
    """gc_ratio: a share of checkpointed blocks, None for none, "plan" for --gradient_checkpointing."""
    requested = "on" if isinstance(gc_ratio, float) else "off" if gc_ratio is None else \
        gradient_checkpointing_choice(opts.gradient_checkpointing)
    budget = opts.memory_budget_gib if opts.memory_budget_gib is not None else default_budget_gib(device)
    plan, _ = plan_for_model_args(requested, model_args, TuningArguments(tune_mode=mode),
                                  kernels_backend=kernels_backend, dtype=precision.compute_dtype,
                                  batch_size=opts.batch, seq=opts.seq, budget_gib=budget,
                                  ratio=gc_ratio if isinstance(gc_ratio, float) else 1.0)
    return plan


def run(mode: str, gc_ratio, opts, model_args: ModelArguments, device) -> dict:
    torch.manual_seed(0)
    train_args = TrainingArguments(output_dir="unused", bf16=device.type == "cuda", learning_rate=1e-5)
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
    strategy = TorchStrategy(train_args, DistContext(0, 1, 0, device, None), precision)
    strategy.setup(model, plan.param_groups(model, train_args.learning_rate, train_args.weight_decay))
    unwrap(model).train()
    build_s = time.time() - started
    params = list(unwrap(model).parameters())
    n_train, n_all = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    batch = synthetic_batch(spec, unwrap(model).config.text_config.vocab_size,
                            unwrap(model).config.vision_config.image_size, opts.batch, opts.seq, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, loss = [], float("nan")
    for step in range(opts.warmup + opts.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        loss_tensor = strategy.forward_backward(batch, last_micro_step=True)
        strategy.optimizer_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= opts.warmup:
            times.append(time.perf_counter() - tick)
        loss = float(loss_tensor)
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
    del model, strategy, batch
    return result


def main(argv=None) -> int:
    opts = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import peft
    import transformers

    print(json.dumps(dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                          impl="llava-ln")), flush=True)
    ratios = [None] if opts.no_gc else [float(r) for r in opts.gc_ratios.split(",")] if opts.gc_ratios else ["plan"]
    with tempfile.TemporaryDirectory() as root:
        model_args = write_configs(root, opts.size)
        model_args.attn_implementation = opts.attn
        for mode in opts.modes.split(","):
            for ratio in ratios:
                try:
                    print(json.dumps(run(mode, ratio, opts, model_args, device)), flush=True)
                except torch.OutOfMemoryError as err:
                    print(json.dumps(dict(mode=mode, size=opts.size, gc_ratio=ratio, impl="llava-ln", error="OOM",
                                          detail=str(err)[:200])), flush=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
