"""Resolve --attn_implementation per model part: FlashAttention-2 where it can run, SDPA otherwise.

"auto" picks, for each part (LLM, vision tower) separately, the best kernel that the
installed environment AND that model class support: flash_attention_2 > sdpa > eager
(Gemma-2, for example, has no SDPA path because of its logit soft-capping).
An explicit request that cannot be honoured is an error, never a silent downgrade.
"""
import importlib.util

import torch

from llava_ln.core.errors import LlavaLnError

ATTN_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")
_SUPPORT_FLAG = {"flash_attention_2": "_supports_flash_attn", "sdpa": "_supports_sdpa", "eager": None}


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


def _class_supports(model_class, implementation: str) -> bool:
    flag = _SUPPORT_FLAG[implementation]
    return model_class is None or flag is None or bool(getattr(model_class, flag, False))


def resolve_attn_implementation(requested: str, model_class=None) -> str:
    """The attention implementation to load model_class with (None: environment check only)."""
    if requested not in ATTN_CHOICES:
        raise LlavaLnError(f"--attn_implementation {requested!r} is not one of {', '.join(ATTN_CHOICES)}")
    usable, reason = flash_attention_available()
    name = getattr(model_class, "__name__", "this model")
    if requested == "auto":
        candidates = (["flash_attention_2"] if usable else []) + ["sdpa", "eager"]
        return next(c for c in candidates if _class_supports(model_class, c))
    if requested == "flash_attention_2" and not usable:
        raise LlavaLnError(f"--attn_implementation flash_attention_2 cannot run here: {reason}; use sdpa or auto")
    if not _class_supports(model_class, requested):
        raise LlavaLnError(f"--attn_implementation {requested}: {name} does not support it; use auto")
    return requested
