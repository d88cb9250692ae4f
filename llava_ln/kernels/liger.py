"""Fused Triton kernels from liger-kernel (`pip install 'llava-ln[kernels]'`), CUDA only.

liger-kernel needs Triton and a CUDA device, so its kernels never run in this project's tests.
The calls below follow liger-kernel's public functional API (liger_kernel.transformers.functional,
stable since 0.5) and are kept to thin adapters. tests/kernels/test_liger.py checks llava-ln's side on a
CPU, with a plain-torch stand-in for the package that takes liger-kernel's parameter names: the choice,
which modules call which function with which arguments, the fused loss, the values against the torch
backend (norms.py, activations.py, fused_loss.py, the reference), and the one-line errors.

Coverage, per kernel kind (anything else falls back to the torch backend, module by module):
  * norm "llama": liger_rms_norm, casting mode "llama", offset 0
  * norm "gemma": liger_rms_norm, casting mode "gemma", offset 1
  * norm "layer": liger_layer_norm, only with both weight and bias
  * gated "silu": liger_swiglu; gated "gelu_tanh": liger_geglu (liger's GEGLU is the tanh form)
  * head + loss: liger_fused_linear_cross_entropy (mean, or sum, over targets != ignore_index)
liger_rms_norm returns the input dtype even with an fp32 weight (LlamaRMSNorm returns fp32
there); the following linear casts to the compute dtype either way.
"""
import importlib.util

import torch

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError


def liger_status() -> tuple[bool, str]:
    """(usable, reason): liger needs the liger_kernel package and a CUDA device."""
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    if importlib.util.find_spec("liger_kernel") is None:
        return False, "liger-kernel is not installed (pip install 'llava-ln[kernels]')"
    try:
        from liger_kernel.transformers import functional  # noqa: F401
    except Exception as err:  # reported to the user (an ABI or Triton mismatch), not swallowed
        return False, f"liger_kernel fails to import: {err}"
    return True, ""


def require_liger() -> None:
    usable, reason = liger_status()
    if not usable:
        raise LlavaLnError(f"--kernels liger cannot run here: {reason}; use --kernels torch or auto")


def covers_norm(style: str, weight, bias) -> bool:
    if style in ("llama", "gemma"):
        return weight is not None
    return weight is not None and bias is not None


def norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, eps: float,
         style: str) -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_layer_norm, liger_rms_norm

    if style == "layer":
        return liger_layer_norm(x, weight, bias, eps)
    offset, casting = (1.0, "gemma") if style == "gemma" else (0.0, "llama")
    # in_place=False: the incoming gradient may still be needed by the residual branch.
    return liger_rms_norm(x, weight, eps, offset=offset, casting_mode=casting, in_place=False)


def covers_gated(kind: str) -> bool:
    return kind in ("silu", "gelu_tanh")


def gated_activation(gate, up, kind: str):
    from liger_kernel.transformers.functional import liger_geglu, liger_swiglu

    return liger_swiglu(gate, up) if kind == "silu" else liger_geglu(gate, up)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                         targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                         reduction: str = "mean") -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(hidden, weight, targets, bias=bias, ignore_index=ignore_index,
                                            reduction=reduction)
