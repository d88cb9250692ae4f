"""Resolve --attn_implementation: FlashAttention-2 where it can run, PyTorch SDPA otherwise."""
import importlib.util

import torch

from llava_ln.errors import LlavaLnError

ATTN_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")


def flash_attention_available() -> tuple[bool, str]:
    """Return (usable, reason). FlashAttention-2 needs the flash_attn package and a CUDA device."""
    if importlib.util.find_spec("flash_attn") is None:
        return False, "the flash_attn package is not installed (pip install 'llava-ln[flash]')"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    try:
        import flash_attn  # noqa: F401  (import can fail on a CUDA/torch ABI mismatch)
    except Exception as err:  # the reason is reported to the user, not swallowed
        return False, f"flash_attn fails to import: {err}"
    return True, ""


def resolve_attn_implementation(requested: str) -> str:
    if requested not in ATTN_CHOICES:
        raise LlavaLnError(f"--attn_implementation {requested!r} is not one of {', '.join(ATTN_CHOICES)}")
    usable, reason = flash_attention_available()
    if requested == "auto":
        return "flash_attention_2" if usable else "sdpa"
    if requested == "flash_attention_2" and not usable:
        raise LlavaLnError(f"--attn_implementation flash_attention_2 cannot run here: {reason}; use sdpa or auto")
    return requested
