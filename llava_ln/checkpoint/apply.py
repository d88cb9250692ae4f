"""Copy saved tensors into a model with strict name and shape checks (errors name the tensor)."""
import torch

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap


def assign_tensors(model, tensors: dict, source: str) -> None:
    """Overwrite the named parameters of the (unwrapped) model with tensors, in place.

    Every tensor must exist in the model with the same shape; otherwise the error names the
    first offending tensor and the file it came from, and nothing has been modified.
    """
    params = dict(unwrap(model).named_parameters())
    for name in sorted(tensors):
        if name not in params:
            raise LlavaLnError(f"{source}: tensor {name} does not exist in this model (checkpoint from another model?)")
        if tuple(params[name].shape) != tuple(tensors[name].shape):
            raise LlavaLnError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)} but the model expects "
                f"{tuple(params[name].shape)} (checkpoint from another model?)"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(dtype=params[name].dtype, device=params[name].device))
