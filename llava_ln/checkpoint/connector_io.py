"""Stage-1 connector files: save them alone, load them for stage 2 (--pretrain_mm_mlp_adapter)."""
import os
import re

from llava_ln.checkpoint.apply import assign_tensors
from llava_ln.checkpoint.tensors import load_tensors, tensor_files
from llava_ln.core.errors import LlavaLnError

CONNECTOR_PREFIX = "model.multi_modal_projector."
# Original LLaVA names its projector an nn.Sequential: mm_projector.0 / .2 / .4 are the Linears.
_LLAVA_SEQUENTIAL = re.compile(r"^(?:model\.)?mm_projector\.(\d+)\.(weight|bias)$")


def _normalise_name(name: str) -> str | None:
    """Map a stored connector tensor name to our naming, or None when it is not a connector tensor."""
    if name.startswith(CONNECTOR_PREFIX):
        return name
    match = _LLAVA_SEQUENTIAL.match(name)
    if match:
        return f"{CONNECTOR_PREFIX}linear_{int(match.group(1)) // 2 + 1}.{match.group(2)}"
    return None


def resolve_connector_file(path: str) -> str:
    """A stage-1 path may be the safetensors file itself or the stage-1 output folder."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for stem in ("stage1_connector", "trained", "mm_projector"):
            if tensor_files(path, stem):
                return os.path.join(path, stem)
        raise LlavaLnError(f"--pretrain_mm_mlp_adapter {path}: folder holds no trained.safetensors or mm_projector.safetensors")
    raise LlavaLnError(f"--pretrain_mm_mlp_adapter {path}: no such file or folder")


def load_connector_tensors(path: str) -> dict:
    source = resolve_connector_file(path)
    tensors = {}
    for name, value in load_tensors(source).items():
        ours = _normalise_name(name)
        if ours is not None:
            tensors[ours] = value
    if not tensors:
        raise LlavaLnError(f"{source}: holds no connector tensors (expected names starting with {CONNECTOR_PREFIX})")
    return tensors


def load_connector(model, path: str) -> None:
    """Load a stage-1 connector into model (strict: every connector tensor, matching shapes)."""
    tensors = load_connector_tensors(path)
    expected = {n for n, _ in _connector_parameters(model)}
    missing = sorted(expected - set(tensors))
    if missing:
        raise LlavaLnError(f"{path}: connector tensor {missing[0]} is missing (different --mm_projector_type?)")
    assign_tensors(model, tensors, source=path)


def _connector_parameters(model):
    from llava_ln.model.parts import unwrap

    return [(n, p) for n, p in unwrap(model).named_parameters() if n.startswith(CONNECTOR_PREFIX)]
