"""The vision-language connector: `linear`, `mlp2x_gelu` (LLaVA-1.5) and `mlp{N}x_gelu`.

`mlp2x_gelu` is transformers' own LlavaMultiModalProjector, so a model trained with it
exports to LlavaForConditionalGeneration unchanged. Other depths use MLPConnector, which
keeps the same parameter naming scheme (linear_1, linear_2, ...).
"""
import re

import torch
from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_ln.core.errors import LlavaLnError

NATIVE_PROJECTOR_TYPE = "mlp2x_gelu"
_MLP_PATTERN = re.compile(r"^mlp(\d+)x_gelu$")


def projector_depth(projector_type: str) -> int:
    """Number of Linear layers for a projector type; raises a clear error for unknown types."""
    if projector_type == "linear":
        return 1
    match = _MLP_PATTERN.match(projector_type)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise LlavaLnError(
        f"--mm_projector_type {projector_type!r} is not supported; use linear, mlp2x_gelu or mlp<N>x_gelu (N >= 1)"
    )


class MLPConnector(nn.Module):
    """Linear layers with exact GELU between them, named linear_1..linear_N like the native projector."""

    def __init__(self, in_features: int, out_features: int, depth: int, *, bias: bool = True):
        super().__init__()
        self.depth = depth
        for index in range(1, depth + 1):
            fan_in = in_features if index == 1 else out_features
            setattr(self, f"linear_{index}", nn.Linear(fan_in, out_features, bias=bias))
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_1(features)
        for index in range(2, self.depth + 1):
            hidden = getattr(self, f"linear_{index}")(self.act(hidden))
        return hidden


def build_connector(projector_type: str, llava_config) -> nn.Module:
    """A freshly initialised connector mapping vision features to the LLM's hidden size."""
    depth = projector_depth(projector_type)
    if projector_type == NATIVE_PROJECTOR_TYPE:
        return LlavaMultiModalProjector(llava_config)
    in_features = llava_config.vision_config.hidden_size
    return MLPConnector(in_features, llava_config.text_config.hidden_size, depth)
