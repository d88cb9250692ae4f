"""Write and read a training run's folder: manifest + trained tensors (+ LoRA adapter).

The write order makes a folder always consistent: tensors first (each file atomically), the
manifest last, so a manifest never points at a half-written tensor file.
"""
import os

from llava_ln.checkpoint.apply import assign_tensors
from llava_ln.checkpoint.manifest import Manifest, write_manifest
from llava_ln.checkpoint.tensors import load_tensors, save_tensors, tensor_files
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap

TRAINED_STEM = "trained"
STAGE1_CONNECTOR_STEM = "stage1_connector"
ADAPTER_DIR = "adapter"


def trainable_tensors(model) -> dict:
    """Every trainable tensor except LoRA factors, named relative to the Llava model."""
    return {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad and ".lora_" not in n}


def save_run(directory: str, model, manifest: Manifest, tensors: dict | None = None,
             lora_state_dict: dict | None = None, stage1_connector: dict | None = None) -> None:
    """Save a trained run into directory.

    tensors: the trained non-LoRA tensors; default: read from the model (pass gathered copies
    under ZeRO-3). lora_state_dict: PEFT adapter weights for lora runs (default: from the model).
    stage1_connector: the frozen stage-1 connector, stored when stage 2 did not train it.
    """
    tensors = trainable_tensors(model) if tensors is None else tensors
    os.makedirs(directory, exist_ok=True)
    save_tensors(directory, TRAINED_STEM, tensors)
    if stage1_connector:
        save_tensors(directory, STAGE1_CONNECTOR_STEM, stage1_connector)
    if manifest.lora is not None:
        with atomic_directory(os.path.join(directory, ADAPTER_DIR)) as tmp:
            model.save_pretrained(tmp, state_dict=lora_state_dict, safe_serialization=True)
    manifest.trained_tensors = {n: [*t.shape, str(t.dtype).replace("torch.", "")] for n, t in sorted(tensors.items())}
    write_manifest(directory, manifest)


def load_trained_tensors(directory: str) -> dict:
    if not tensor_files(directory, TRAINED_STEM):
        raise LlavaLnError(f"{directory}: no {TRAINED_STEM}.safetensors (incomplete run folder?)")
    return load_tensors(os.path.join(directory, TRAINED_STEM))


def apply_run(model, directory: str, manifest: Manifest):
    """Apply a run folder to a freshly built base model; returns the model (a PeftModel for lora)."""
    from llava_ln.checkpoint.connector_io import load_connector

    if tensor_files(directory, STAGE1_CONNECTOR_STEM):
        load_connector(model, os.path.join(directory, STAGE1_CONNECTOR_STEM + ".safetensors"))
    elif manifest.pretrain_mm_mlp_adapter and manifest.stage == 2:
        load_connector(model, manifest.pretrain_mm_mlp_adapter)
    if manifest.lora is not None:
        model = _attach_adapter(model, os.path.join(directory, ADAPTER_DIR))
    assign_tensors(model, load_trained_tensors(directory), source=os.path.join(directory, TRAINED_STEM))
    return model


def _attach_adapter(model, adapter_dir: str):
    from peft import PeftModel

    if not os.path.exists(os.path.join(adapter_dir, "adapter_config.json")):
        raise LlavaLnError(f"{adapter_dir}: LoRA adapter missing (adapter_config.json not found)")
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    except (RuntimeError, ValueError) as err:
        raise LlavaLnError(f"{adapter_dir}: LoRA adapter does not fit this base model ({err})") from None
