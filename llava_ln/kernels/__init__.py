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
from llava_ln.core.lazy import lazy_exports

# Importing the package imports no torch: each name loads its module when first asked for, so that the
# flag dataclasses that name the kernel choices (training.args) stay importable without torch.
_EXPORTS = {
    **dict.fromkeys(("KernelReport", "apply_kernels", "kernel_backend_of", "remove_kernels",
                     "resolve_kernel_backend"), "llava_ln.kernels.apply"),
    **dict.fromkeys(("count_supervised_tokens", "multimodal_supervised_loss", "supervised_lm_loss",
                     "supervised_targets"), "llava_ln.kernels.loss"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# --kernels: here rather than in apply.py so that training's flags can name them without importing torch.
KERNEL_CHOICES = ("auto", "torch", "liger", "none")
