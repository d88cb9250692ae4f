"""Tiny causal LMs of every family the kernels cover, and pairs of (original, lean) modules to compare.

The families of tiny.py plus Gemma and Gemma-2 (whose (1 + w) RMSNorm and GELU-tanh MLP the kernels
also cover; they are not in tiny.py because the rest of the suite does not build LLaVA from them).
"""
import copy

import torch
from tiny import _COMMON, LLM_CONFIGS
from transformers import AutoModelForCausalLM, Gemma2Config, GemmaConfig

from llava_ln.kernels.apply import apply_kernels

KERNEL_CONFIGS = {
    **LLM_CONFIGS,
    "gemma": lambda: GemmaConfig(**_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma2": lambda: Gemma2Config(**_COMMON, num_key_value_heads=2, head_dim=8, attn_implementation="eager"),
}
KERNEL_FAMILIES = tuple(KERNEL_CONFIGS)


def tiny_lm(family: str, seed: int = 0, **config_overrides):
    """A tiny random causal LM of `family` whose norm weights and biases are far from their init; config_overrides
    set config attributes that `family` has (others are ignored, so one set of overrides serves every family)."""
    torch.manual_seed(seed)
    config = KERNEL_CONFIGS[family]()
    for key, value in config_overrides.items():
        if hasattr(config, key):
            setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if param.dim() == 1:  # norm weights/biases start at 0 or 1: make every term of the formula count
                    param.add_(torch.randn_like(param) * 0.3)
    return model


def module_pairs(family: str, choice: str = "torch"):
    """[(class name, original module, lean copy)] for every module apply_kernels replaces in a tiny LM."""
    original = tiny_lm(family)
    lean = copy.deepcopy(original)
    apply_kernels(lean, choice)
    pairs = []
    for (name, before), (_, after) in zip(original.named_modules(), lean.named_modules()):
        if "forward" in vars(after):
            pairs.append((f"{type(before).__name__}:{name}", before, after))
    return pairs


def run_with_grads(module, x, grad_out):
    """Forward x through module; returns (output, d x, {parameter name: gradient})."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(grad_out.to(out.dtype))
    grads = {name: p.grad for name, p in module.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def relative_error(actual, expected) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
