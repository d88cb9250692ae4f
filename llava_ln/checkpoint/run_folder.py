"""A training run's folder: write it, check it against its base, apply it, and the stage-1 connector.

  OUTPUT_DIR/
    manifest.json                 what to rebuild (checkpoint.manifest), written LAST
    trained.safetensors           every trainable tensor except LoRA factors (sharded if large)
    adapter/                      PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
    stage1_connector.safetensors  the stage-1 connector, when stage 2 did not train it (ln_simple)

Stage 2 starts from the stage-1 connector (--pretrain_mm_mlp_adapter: its safetensors file, the
stage-1 run folder, or LLaVA's `mm_projector.bin` / `.safetensors`; a `.bin` is read tensor-only). It is loaded
before any strategy wraps the model, so shapes are checked on whole tensors and a mismatch names
the tensor; its exact fp32 file values are returned so training can also write them into the
fp32 masters (bf16 loading would otherwise round them).

Before merge or export rebuild a run, every stored tensor is checked against the base model built
on the meta device, reading only safetensors headers: the first mismatch is one line naming the
file and the tensor, whichever file it sits in. The manifest must also agree with what it
describes: its trained_tensors (names, shapes, dtypes) with the file headers, and its tune_mode
with the set of tensors stored. The files about to be opened are first checked against the
manifest's checksums (checkpoint.integrity).
"""
import os
import re

from torch import nn

from llava_ln.checkpoint.integrity import digests_of, verify_files
from llava_ln.checkpoint.manifest import MANIFEST_NAME, Manifest, tuning_arguments, write_manifest
from llava_ln.checkpoint.partitions import gathered_value
from llava_ln.checkpoint.tensors import (
    TensorReader,
    assign_tensors,
    is_pickle_name,
    load_tensors,
    load_torch_tensors_safely,
    save_tensors,
    stored_shapes,
    tensor_file_names,
    tensor_files,
)
from llava_ln.core.atomic import atomic_directory
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.constants import CONNECTOR_PREFIX, strip_peft_prefix
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.model.backbones import WEIGHT_LOAD_ERRORS
from llava_ln.model.parts import unwrap
from llava_ln.tuning.plan import quiet_peft_wrapping, saved_tensor_names

TRAINED_STEM = "trained"
STAGE1_CONNECTOR_STEM = "stage1_connector"
ADAPTER_DIR = "adapter"
_HINT = "(checkpoint from another model, or a different base?)"
# Original LLaVA names its projector an nn.Sequential: mm_projector.0 / .2 / .4 are the Linears
# (its `linear` projector is a bare nn.Linear: mm_projector.weight).
_LLAVA_SEQUENTIAL = re.compile(r"^(?:model\.)?mm_projector\.(\d+)\.(weight|bias)$")
_LLAVA_LINEAR = re.compile(r"^(?:model\.)?mm_projector\.(weight|bias)$")


# ---- the stage-1 connector ----

def connector_name(stored: str) -> str | None:
    """A stored connector tensor's name in our naming, or None when it is not a connector tensor."""
    if stored.startswith(CONNECTOR_PREFIX):
        return stored
    match = _LLAVA_SEQUENTIAL.match(stored)
    if match:
        return f"{CONNECTOR_PREFIX}linear_{int(match.group(1)) // 2 + 1}.{match.group(2)}"
    match = _LLAVA_LINEAR.match(stored)
    if match:
        return f"{CONNECTOR_PREFIX}linear_1.{match.group(1)}"
    return None


def connector_parameters(model) -> dict:
    return {n: p for n, p in unwrap(model).named_parameters() if n.startswith(CONNECTOR_PREFIX)}


def resolve_connector_file(path: str) -> str:
    """A stage-1 path may be the safetensors file itself or the stage-1 output folder."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for stem in (STAGE1_CONNECTOR_STEM, TRAINED_STEM, "mm_projector"):
            if tensor_files(path, stem):
                return os.path.join(path, stem)
        if os.path.isfile(os.path.join(path, "mm_projector.bin")):
            return os.path.join(path, "mm_projector.bin")
        raise LlavaLnError(f"--pretrain_mm_mlp_adapter {path}: folder holds no trained.safetensors or "
                           "mm_projector.safetensors / .bin")
    raise LlavaLnError(f"--pretrain_mm_mlp_adapter {path}: no such file or folder")


def load_connector_tensors(path: str) -> dict:
    source = resolve_connector_file(path)
    tensors = {}
    stored = load_torch_tensors_safely(source) if source.endswith(".bin") else load_tensors(source)
    for name, value in stored.items():
        ours = connector_name(name)
        if ours is not None:
            tensors[ours] = value
    if not tensors:
        raise LlavaLnError(f"{source}: holds no connector tensors (expected names starting with {CONNECTOR_PREFIX})")
    return tensors


def load_connector(model, path: str) -> dict:
    """Load a connector into model (strict: every connector tensor, matching shapes); returns the file's
    values in fp32 (exact, whatever dtype the model holds)."""
    tensors = load_connector_tensors(path)
    expected = set(connector_parameters(model))
    missing = sorted(expected - set(tensors))
    if missing:
        raise LlavaLnError(f"{path}: connector tensor {missing[0]} is missing (different --mm_projector_type?)")
    assign_tensors(model, tensors, source=path)
    return {name: value.float() for name, value in tensors.items() if name in expected}


def frozen_connector_values(model, plan, loaded: dict | None) -> dict | None:
    """The connector to store beside a run that does not train it (None when it trains)."""
    if plan.trains_connector:
        return None
    if loaded:
        return loaded
    # Collective under ZeRO-3 (every rank calls this): the values are gathered from the partitions.
    return {n: gathered_value(p).float() for n, p in connector_parameters(model).items()}


# ---- writing and applying a run folder ----

def trainable_tensors(model, plan) -> dict:
    """Every trainable tensor except LoRA factors (those go to the adapter), named relative to Llava."""
    return {n: p for n, p in unwrap(model).named_parameters() if n in plan.trainable and n not in plan.lora_names}


def save_run(directory: str, model: nn.Module, manifest: Manifest, *, tensors: dict,
             lora_state_dict: dict | None = None, stage1_connector: dict | None = None,
             extra_files: dict | None = None) -> None:
    """Save a trained run into directory: tensors first (each file atomic), the manifest last.

    tensors: the trained non-LoRA tensors (gathered copies under ZeRO-3). lora_state_dict: PEFT adapter
    weights of a lora run. stage1_connector: the frozen stage-1 connector, stored when stage 2 did not
    train it, so the folder alone rebuilds the model. extra_files: {relative path: sha256} of other
    files already written into directory that the manifest covers too (a checkpoint's resume state).
    """
    os.makedirs(directory, exist_ok=True)
    files = dict(extra_files or {})
    files.update(save_tensors(directory, TRAINED_STEM, tensors))
    if stage1_connector:
        files.update(save_tensors(directory, STAGE1_CONNECTOR_STEM, stage1_connector))
    if manifest.has_adapter:
        with atomic_directory(os.path.join(directory, ADAPTER_DIR)) as tmp:
            save_pretrained(model, tmp, state_dict=lora_state_dict, safe_serialization=True)
            written = [name for name in os.listdir(tmp) if os.path.isfile(os.path.join(tmp, name))]
            files.update({f"{ADAPTER_DIR}/{name}": digest for name, digest in digests_of(tmp, written).items()})
    manifest.trained_tensors = {n: [*t.shape, str(t.dtype).replace("torch.", "")] for n, t in sorted(tensors.items())}
    manifest.files = files
    write_manifest(directory, manifest)


def load_trained_tensors(directory: str) -> dict:
    if not tensor_files(directory, TRAINED_STEM):
        raise LlavaLnError(f"{directory}: no {TRAINED_STEM}.safetensors (incomplete run folder?)")
    return load_tensors(os.path.join(directory, TRAINED_STEM))


def load_run_connector(model, directory: str, manifest: Manifest) -> None:
    """The connector a run started from: stored beside it, or the stage-1 run its manifest names."""
    if tensor_files(directory, STAGE1_CONNECTOR_STEM):
        load_connector(model, os.path.join(directory, STAGE1_CONNECTOR_STEM + ".safetensors"))
    elif manifest.pretrain_mm_mlp_adapter and manifest.stage == 2:
        load_connector(model, manifest.pretrain_mm_mlp_adapter)


def apply_run(model, directory: str, manifest: Manifest):
    """Apply a run folder to a freshly built base model; returns the model (a PeftModel for lora)."""
    load_run_connector(model, directory, manifest)
    if manifest.has_adapter:
        model = _attach_adapter(model, os.path.join(directory, ADAPTER_DIR))
    assign_tensors(model, load_trained_tensors(directory), source=os.path.join(directory, TRAINED_STEM))
    return model


def _attach_adapter(model, adapter_dir: str):
    from peft import PeftModel

    if not os.path.exists(os.path.join(adapter_dir, "adapter_config.json")):
        raise LlavaLnError(f"{adapter_dir}: LoRA adapter missing (adapter_config.json not found)")
    _adapter_weights(adapter_dir)  # PEFT must find safetensors, never fall back to a pickle
    try:
        with quiet_peft_wrapping():
            return load_pretrained(PeftModel, model, adapter_dir, is_trainable=False)
    except WEIGHT_LOAD_ERRORS as err:
        raise LlavaLnError(f"{adapter_dir}: LoRA adapter does not fit this base model ({short_reason(err)})") from None


# ---- checking a run against its base (headers only) ----

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
    config = read_json_object(config_path)
    try:
        rank = int(config.get("r", 0))
        # The tower's LoRA has its own rank (tuning.plan gives it through rank_pattern, one anchored name each).
        ranks = {str(key): int(value) for key, value in (config.get("rank_pattern") or {}).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise LlavaLnError(f"{config_path} is not a valid adapter config ({err})") from None
    for name, (shape, file) in sorted(stored_shapes([_adapter_weights(adapter_dir)]).items()):
        # PEFT's file format: <module>.lora_A.weight / <module>.lora_B.weight
        module_name, _, factor = strip_peft_prefix(name).rpartition(".lora_")
        module = base_modules.get(module_name)
        if module is None or not hasattr(module, "in_features"):
            raise LlavaLnError(f"{file}: tensor {name} targets {module_name}, which is no linear layer "
                               f"of the base model {_HINT}")
        r = next((value for key, value in ranks.items() if _pattern_names(key, module_name)), rank)
        want = {"A.weight": (r, module.in_features), "B.weight": (module.out_features, r)}.get(factor)
        if want is not None and shape != want:
            raise LlavaLnError(f"{file}: tensor {name} has shape {shape} but the base layer {module_name} "
                               f"needs {want} at rank {rank} {_HINT}")


def _pattern_names(pattern: str, module_name: str) -> bool:
    """Whether an adapter's rank_pattern key applies to module_name (PEFT matches a key at a name's end)."""
    try:
        return re.match(rf"(.*\.)?({pattern})$", module_name) is not None
    except re.error:
        return False


def _adapter_weights(adapter_dir: str) -> str:
    """The adapter's weights file: adapter_model.safetensors (a pickled adapter_model.bin is refused)."""
    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.isfile(path):
        pickled = [f for f in sorted(os.listdir(adapter_dir)) if is_pickle_name(f)] if os.path.isdir(adapter_dir) else []
        if pickled:
            raise LlavaLnError(f"{os.path.join(adapter_dir, pickled[0])} is a PyTorch pickle file; llava-ln reads the "
                               "LoRA adapter from adapter_model.safetensors only")
        raise LlavaLnError(f"{adapter_dir}: no adapter_model.safetensors")
    return path


def verify_run_files(run_dir: str, manifest: Manifest) -> None:
    """Check every file loading this run opens against the manifest's checksums.

    A folder with only DeepSpeed shards (zero_shards) has no trained tensors or adapter to open:
    its LoRA factors come from the shards, which DeepSpeed wrote and nothing here hashed.
    """
    trained = tensor_file_names(run_dir, TRAINED_STEM)
    opened = trained + tensor_file_names(run_dir, STAGE1_CONNECTOR_STEM)
    if manifest.has_adapter and trained:
        opened += [f"{ADAPTER_DIR}/adapter_config.json", f"{ADAPTER_DIR}/adapter_model.safetensors"]
    verify_files(run_dir, manifest, opened)


def check_manifest_agrees(run_dir: str, manifest: Manifest, base_model) -> None:
    """The manifest's trained_tensors and tune_mode must describe exactly what trained.safetensors holds."""
    where = os.path.join(run_dir, MANIFEST_NAME)
    reader = TensorReader(os.path.join(run_dir, TRAINED_STEM))
    stored, recorded = reader.names(), manifest.trained_tensors
    for name in sorted(stored ^ set(recorded)):
        if name in stored:
            raise LlavaLnError(f"{reader.location[name]} holds tensor {name}, which trained_tensors in {where} "
                               "does not list (edited manifest or mixed files?)")
        raise LlavaLnError(f"{where} lists tensor {name}, which {run_dir}/{TRAINED_STEM}.safetensors lacks "
                           "(edited manifest or mixed files?)")
    for name in sorted(stored):
        *shape, dtype = recorded[name]
        if tuple(shape) != reader.shape(name) or dtype != reader.dtype(name):
            raise LlavaLnError(f"{where} gives tensor {name} as {tuple(shape)} {dtype}, but {reader.location[name]} "
                               f"holds {reader.shape(name)} {reader.dtype(name)} (edited manifest?)")
    expected = saved_tensor_names(base_model, tuning_arguments(manifest))
    for name in sorted(stored ^ expected):
        what = "does not train" if name in stored else "trains"
        # The set is computed on this base: another tower (or LLM) of the same shapes changes it as much as an edit.
        raise LlavaLnError(f"{where}: tune_mode {manifest.tune_mode} (tune_embeddings {manifest.tune_embeddings}, "
                           f"vision_tune_mode {manifest.vision_tune_mode}) {what} tensor {name} of this base model, but "
                           "the run's trained tensors say otherwise (a different base, such as another --vision_tower, "
                           "or an edited manifest?)")


def check_run_against_base(run_dir: str, manifest: Manifest, base_model) -> None:
    """Raise LlavaLnError naming the first stored tensor that does not fit base_model (a meta model)."""
    params = {n: tuple(p.shape) for n, p in base_model.named_parameters()}
    stage1 = tensor_files(run_dir, STAGE1_CONNECTOR_STEM)
    if stage1:
        shapes = stored_shapes(stage1)
        _check_named({connector_name(n) or n: v for n, v in shapes.items()}, params)
    if manifest.has_adapter:
        _check_adapter(os.path.join(run_dir, ADAPTER_DIR), dict(base_model.named_modules()))
    trained = tensor_files(run_dir, TRAINED_STEM)
    if trained:
        _check_named(stored_shapes(trained), params)
        check_manifest_agrees(run_dir, manifest, base_model)
