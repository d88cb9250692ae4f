"""Check a run folder against its base models before anything heavy is loaded.

The base is built on the meta device (no weights read) and every stored tensor's name and
shape is compared with it, reading only safetensors headers. The first mismatch is a
one-line error naming the file and the tensor, whichever file it sits in: the stage-1
connector, the LoRA adapter or the trained tensors. This runs before merge and export
because a shape error deep inside PEFT or from_pretrained is a multi-line traceback that
does not say which checkpoint is at fault.
"""
import json
import os

from safetensors import SafetensorError, safe_open

from llava_ln.checkpoint.connector_io import _normalise_name
from llava_ln.checkpoint.run_io import ADAPTER_DIR, STAGE1_CONNECTOR_STEM, TRAINED_STEM
from llava_ln.checkpoint.tensors import tensor_files
from llava_ln.core.errors import LlavaLnError

_HINT = "(checkpoint from another model, or a different base?)"
_PEFT_PREFIX = "base_model.model."


def stored_shapes(files: list) -> dict:
    """name -> shape for every tensor in the safetensors files (headers only)."""
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = (tuple(handle.get_slice(name).get_shape()), file)
        except (SafetensorError, OSError) as err:
            raise LlavaLnError(f"checkpoint file {file} is not a readable safetensors file ({err})") from None
    return shapes


def _check_named(stored: dict, expected: dict) -> None:
    for name in sorted(stored):
        shape, file = stored[name]
        if name not in expected:
            raise LlavaLnError(f"{file}: tensor {name} does not exist in the base model {_HINT}")
        if tuple(expected[name]) != shape:
            raise LlavaLnError(
                f"{file}: tensor {name} has shape {shape} but the base model has {tuple(expected[name])} {_HINT}"
            )


def _check_adapter(adapter_dir: str, base_modules: dict) -> None:
    config_path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.exists(config_path):
        raise LlavaLnError(f"{adapter_dir}: LoRA adapter missing (adapter_config.json not found)")
    with open(config_path, encoding="utf-8") as handle:
        rank = int(json.load(handle).get("r", 0))
    files = [os.path.join(adapter_dir, f) for f in sorted(os.listdir(adapter_dir)) if f.endswith(".safetensors")]
    if not files:
        raise LlavaLnError(f"{adapter_dir}: no adapter_model.safetensors")
    for name, (shape, file) in sorted(stored_shapes(files).items()):
        module_name = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
        module_name, _, factor = module_name.rpartition(".lora_")
        module = base_modules.get(module_name)
        if module is None or not hasattr(module, "in_features"):
            raise LlavaLnError(f"{file}: tensor {name} targets {module_name}, which is no linear layer "
                               f"of the base model {_HINT}")
        want = {"A.weight": (rank, module.in_features), "B.weight": (module.out_features, rank)}.get(factor)
        if want is not None and shape != want:
            raise LlavaLnError(f"{file}: tensor {name} has shape {shape} but the base layer {module_name} "
                               f"needs {want} at rank {rank} {_HINT}")


def check_run_against_base(run_dir: str, manifest, base_model) -> None:
    """Raise LlavaLnError naming the first stored tensor that does not fit base_model (a meta model)."""
    params = {n: tuple(p.shape) for n, p in base_model.named_parameters()}
    stage1 = tensor_files(run_dir, STAGE1_CONNECTOR_STEM)
    if stage1:
        shapes = stored_shapes(stage1)
        _check_named({_normalise_name(n) or n: v for n, v in shapes.items()}, params)
    if manifest.lora is not None:
        _check_adapter(os.path.join(run_dir, ADAPTER_DIR), dict(base_model.named_modules()))
    trained = tensor_files(run_dir, TRAINED_STEM)
    if trained:
        _check_named(stored_shapes(trained), params)
