"""A merged (standalone) llava-ln checkpoint folder: its layout, writing and reading it.

  MERGED/
    manifest.json              kind "merged"; llm / tokenizer / vision_tower are "." (this folder)
    config.json                LlavaConfig (text + vision configs, image token, feature layer/strategy)
    model.safetensors          every weight, via save_pretrained (sharded with an index when large)
                               (the manifest's `files` holds the sha256 of these weight files)
    non_native.safetensors     only when needed: tensors LlavaForConditionalGeneration cannot hold,
                               under llava-ln's names (see below)
    generation_config.json     eos = the tokenizer's eos plus the template's end-of-turn token
    tokenizer files            with <image> already added, and the run's template as its chat_template
    preprocessor_config.json   the vision tower's image processor (squaring is in the manifest)
    merged_from.json           the source run's manifest, for provenance

What the native class can hold: transformers' LlavaForConditionalGeneration has a fixed two-layer
GELU projector and a bias-free LM head. llava-ln can build models outside that (a `linear` or
`mlp3x_gelu` connector; an LLM whose head has a bias, such as Phi). Such tensors are
"non-native": a merged folder stores them in the side file so llava-ln restores them on load, and
`export --format hf` refuses the model with an explanation instead of writing a folder that loads
with silently re-initialised weights. A merged folder with the native connector is also a valid
LlavaForConditionalGeneration folder.
"""
import os
from contextlib import contextmanager

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

from llava_ln.checkpoint.tensors import assign_tensors, load_tensors, save_tensors, tensor_files
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.constants import CONNECTOR_PREFIX, IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.core.pretrained import load_pretrained
from llava_ln.core.saving import save_pretrained
from llava_ln.model.backbones import WEIGHT_LOAD_ERRORS
from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE, build_connector
from llava_ln.model.parts import unwrap

NON_NATIVE_STEM = "non_native"
MERGED_FROM = "merged_from.json"
SELF = "."


def write_model_files(model, directory: str, projector_type: str) -> list:
    """save_pretrained plus the non-native side file; returns the non-native tensor names."""
    extra = non_native_parameters(model, projector_type)
    save_pretrained(model, directory, safe_serialization=True)
    if extra:
        save_tensors(directory, NON_NATIVE_STEM, extra)
    return sorted(extra)


def merged_weight_files(directory: str) -> list:
    """Relative paths of a merged folder's weight files (and shard indexes): what its manifest's checksums cover."""
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return [name for name in names if os.path.isfile(os.path.join(directory, name)) and (
        name.startswith(("model", NON_NATIVE_STEM)) and name.endswith((".safetensors", ".safetensors.index.json")))]


def write_provenance(directory: str, source_path: str, source_manifest) -> None:
    """merged_from.json: the run's manifest (re-merging or exporting a merged folder keeps the original)."""
    original = read_provenance(source_path) if source_manifest.kind == "merged" else None
    write_json_atomic(os.path.join(directory, MERGED_FROM), original or source_manifest.to_dict())


@contextmanager
def quiet_transformers():
    """Hide transformers' missing/unexpected-key report, which is expected for non-native parts."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _make_room_for(model, tensors: dict) -> None:
    """Give the model the non-native parameters it will receive: our connector, missing biases."""
    for name, value in tensors.items():
        if name.startswith(CONNECTOR_PREFIX):
            continue
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr == "bias" and isinstance(module, nn.Linear) and module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype))


def load_merged_model(path: str, projector_type: str, *, dtype: torch.dtype = torch.float32,
                      attn_implementation: str = "sdpa") -> LlavaForConditionalGeneration:
    """LlavaForConditionalGeneration with every merged tensor, including non-native ones."""
    with quiet_transformers():
        try:
            # Our merged folders hold safetensors only: never let transformers fall back to a pickle.
            model = load_pretrained(LlavaForConditionalGeneration,
                path, dtype=dtype, attn_implementation=attn_implementation, use_safetensors=True
            )
        except WEIGHT_LOAD_ERRORS as err:
            raise LlavaLnError(f"{path}: cannot load the merged model ({short_reason(err)})") from None
    extra = load_tensors(os.path.join(path, NON_NATIVE_STEM)) if tensor_files(path, NON_NATIVE_STEM) else {}
    if projector_type != NATIVE_PROJECTOR_TYPE:
        connector = build_connector(projector_type, model.config)
        model.model.multi_modal_projector = connector.to(dtype=dtype)
        expected = {f"{CONNECTOR_PREFIX}{n}" for n, _ in connector.named_parameters()}
        missing = sorted(expected - set(extra))
        if missing:
            raise LlavaLnError(f"{path}: tensor {missing[0]} of the {projector_type} connector is missing "
                               f"from {NON_NATIVE_STEM}.safetensors")
    _make_room_for(model, extra)
    assign_tensors(model, extra, source=os.path.join(path, NON_NATIVE_STEM + ".safetensors"))
    return model


def merged_image_token_check(path: str, model, tokenizer) -> None:
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if model.config.image_token_id != token_id:
        raise LlavaLnError(
            f"{path}: config.json says the image token is id {model.config.image_token_id}, "
            f"the tokenizer there gives <image> id {token_id}"
        )


def read_provenance(path: str) -> dict | None:
    file = os.path.join(path, MERGED_FROM)
    if not os.path.exists(file):
        return None
    return read_json_object(file)



# ---- what the native class can hold ----

def native_parameter_shapes(config) -> dict:
    """name -> shape of every parameter the native class creates for this config (built on meta)."""
    with torch.device("meta"):
        shell = LlavaForConditionalGeneration(config)
    return {name: tuple(p.shape) for name, p in shell.named_parameters()}


def non_native_parameters(model, projector_type: str) -> dict:
    """Parameters of our model that the native class would not load (name -> tensor).

    A non-native connector counts whole: even where a tensor happens to share a name and
    shape with the native projector (`linear`'s linear_1), the native forward would apply a
    second layer that does not exist in our model.
    """
    llava = unwrap(model)
    native = native_parameter_shapes(llava.config)
    extra = {}
    for name, param in llava.named_parameters():
        is_connector = name.startswith(CONNECTOR_PREFIX)
        if (is_connector and projector_type != NATIVE_PROJECTOR_TYPE) or native.get(name) != tuple(param.shape):
            extra[name] = param
    return extra


def export_blockers(model, projector_type: str) -> list:
    """Reasons the model cannot be written as a plain LlavaForConditionalGeneration (empty: it can).

    A head bias that is exactly zero is not a blocker: dropping it changes no output.
    """
    reasons = []
    if projector_type != NATIVE_PROJECTOR_TYPE:
        reasons.append(
            f"its connector is --mm_projector_type {projector_type}, but transformers' LlavaForConditionalGeneration "
            f"only has the two-layer GELU projector ({NATIVE_PROJECTOR_TYPE}); loading it there would need custom code"
        )
    for name, param in non_native_parameters(model, projector_type).items():
        if name.startswith(CONNECTOR_PREFIX):
            continue
        if name.endswith(".bias") and not torch.count_nonzero(param.detach()).item():
            continue
        reasons.append(f"tensor {name} {tuple(param.shape)} has no place in LlavaForConditionalGeneration")
    return reasons


def drop_zero_biases(model, names) -> None:
    """Remove all-zero bias parameters the native class lacks, so save_pretrained omits them."""
    llava = unwrap(model)
    for name in names:
        module_name, _, attr = name.rpartition(".")
        module = llava.get_submodule(module_name)
        if attr == "bias" and not torch.count_nonzero(getattr(module, attr).detach()).item():
            module.bias = None
