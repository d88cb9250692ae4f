"""Memory-lean kernels for norm-only tuning: the LLM's linear layers are frozen, so a step needs one
forward plus input gradients, and backward needs far less than transformers' modules keep.

  norms           RMSNorm (LLaMA and Gemma styles) and LayerNorm saving the input and 1/rms only
  activations     act(gate) * up (and plain activations) saving their inputs only
  fused_loss      LM head + cross-entropy in row chunks, gradients computed in the forward pass
  loss            the training loss through the fused head (supervised rows only)
  registry        which transformers classes are replaced, matched by exact class
  apply           apply_kernels(model, "auto"|"torch"|"liger"|"none") -> KernelReport
  liger           liger-kernel's Triton kernels where they cover a module (CUDA only)
  accounting      bytes saved for backward, and a flash-like attention for meta-device accounting

Layer: imports core and model only.
"""
from llava_ln.kernels.apply import (
    KERNEL_CHOICES,
    KernelReport,
    apply_kernels,
    kernel_backend_of,
    remove_kernels,
    resolve_kernel_backend,
)
from llava_ln.kernels.loss import multimodal_supervised_loss, supervised_lm_loss

__all__ = [
    "KERNEL_CHOICES",
    "KernelReport",
    "apply_kernels",
    "kernel_backend_of",
    "multimodal_supervised_loss",
    "remove_kernels",
    "resolve_kernel_backend",
    "supervised_lm_loss",
]
