"""Exact per-token cost of a LLaMA step with and without llava-ln's lean kernels, on the meta device.

Counterpart of bench/baseline/step_account.py (same shapes, same counting): a plain
transformers LLaMA in bf16 with attention as a flash kernel stores it, tuned in ln_simple or
ln (linear layers frozen), and `--kernels none` (transformers' modules) or `torch` (the
lean autograd functions swapped in by llava_ln.kernels.apply_kernels). No weights exist and
nothing is computed, so the 7B shape runs in seconds on a CPU. Per block = (3 layers - 1 layer) / 2.

    python -m bench.kernel_account --modes ln_simple,ln --kernels none,torch

One JSON line per (mode, kernels): saved bytes per token per block (`packed` counts every
save, as step_account.py does; `unique` counts each tensor kept alive once), FLOPs per token
per block (forward, and forward + backward), and the LM head + loss: saved bytes per supervised
row and fixed (the head-weight gradient the fused loss holds from forward to backward in ln),
unfused (bf16 logits, fp32 cross-entropy) with kernels none, the chunked fused loss with torch.
"""
import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaForCausalLM

from llava_ln.kernels.accounting import SavedTensorBytes, register_flash_like_attention
from llava_ln.kernels.apply import apply_kernels
from llava_ln.kernels.fused_loss import fused_linear_cross_entropy
from llava_ln.model.shapes import llm_config


def build(layers: int, mode: str, kernels: str, attention: str):
    config = llm_config("7b", num_hidden_layers=layers, attn_implementation=attention)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    for name, param in model.named_parameters():  # the tuning rule of step_account.py
        param.requires_grad_("norm" in name or (mode == "ln" and ("embed" in name or "lm_head" in name)))
    apply_kernels(model, kernels, device="meta")
    return model


def measure_blocks(layers: int, mode: str, kernels: str, seq: int, attention: str):
    """(saved bytes counter, forward FLOPs, total FLOPs) of a step of a `layers`-block model."""
    model = build(layers, mode, kernels, attention)
    ids = torch.zeros(1, seq, dtype=torch.long, device="meta")
    positions = torch.arange(seq, device="meta").unsqueeze(0)
    counter = FlopCounterMode(display=False)
    with counter:
        with SavedTensorBytes(model) as saved:
            logits = model(input_ids=ids, position_ids=positions).logits
        forward = counter.get_total_flops()
        logits.float().sum().backward()
    return saved, forward, counter.get_total_flops()


def measure_head(mode: str, kernels: str, rows: int):
    """Saved bytes and FLOPs of the LM head + cross-entropy over `rows` supervised tokens."""
    config = llm_config("7b", num_hidden_layers=1)
    with torch.device("meta"):
        head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=torch.bfloat16)
        hidden = torch.zeros(rows, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        targets = torch.zeros(rows, dtype=torch.long)
    head.weight.requires_grad_(mode == "ln")
    counter = FlopCounterMode(display=False)
    with counter:
        with SavedTensorBytes(head) as saved:
            if kernels == "none":
                loss = torch.nn.functional.cross_entropy(head(hidden).float(), targets)
            else:
                loss = fused_linear_cross_entropy(hidden, head.weight, None, targets=targets)
        loss.backward()
    return saved, counter.get_total_flops()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="ln_simple,ln")
    parser.add_argument("--kernels", default="none,torch")
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args(argv)
    attention = register_flash_like_attention()
    for mode in args.modes.split(","):
        for kernels in args.kernels.split(","):
            one, forward_1, total_1 = measure_blocks(1, mode, kernels, args.seq, attention)
            three, forward_3, total_3 = measure_blocks(3, mode, kernels, args.seq, attention)
            head, head_flops = measure_head(mode, kernels, args.seq)
            head_2, _ = measure_head(mode, kernels, 2 * args.seq)
            head_per_row = (head_2.packed - head.packed) / args.seq
            per_block = 2 * args.seq
            print(json.dumps({
                "mode": mode, "kernels": kernels, "seq": args.seq,
                "saved_KB_per_token_per_block": round((three.packed - one.packed) / per_block / 1e3, 2),
                "unique_KB_per_token_per_block": round((three.unique - one.unique) / per_block / 1e3, 2),
                "fwd_GFLOP_per_token_per_block": round((forward_3 - forward_1) / per_block / 1e9, 4),
                "total_GFLOP_per_token_per_block": round((total_3 - total_1) / per_block / 1e9, 4),
                "head_loss_saved_KB_per_row": round(head_per_row / 1e3, 2),
                "head_loss_saved_fixed_MB": round((head.packed - head_per_row * args.seq) / 1e6, 1),
                "head_loss_GFLOP_per_row": round(head_flops / args.seq / 1e9, 4),
            }))


if __name__ == "__main__":
    main()
