"""The start of a run under ZeRO-3: which stored tensor fills each parameter, for every start layout.

Under ZeRO-3 the start model is created empty and partitioned (model.builder's `construct`,
training/zero/partitioned_init.py) and then filled by sharded_load, each rank reading only its partitions. What
this module adds is the map from each parameter of the composed model (LlavaForConditionalGeneration
names) to the stored tensor that holds it, per layout of --model_name_or_path
(checkpoint.run_start decides the layout):

  a text-only LLM + --vision_tower   the LLM's safetensors (names through a meta copy of the causal LM,
                                     so `model.`/`transformer.` bodies and `lm_head`/`embed_out` heads
                                     all map) and the tower's; the new connector keeps its values
  original LLaVA                     the same, with the LLM's config from the checkpoint; its
                                     `model.mm_projector.*` connector is copied afterwards
  a transformers LLaVA folder        every tensor from the folder (transformers' Llava key renaming);
                                     a tower named by --vision_tower instead comes from there
  a merged llava-ln folder           the same, plus the non-native side file (our own names);
                                     `build_merged_partitioned` creates it (connector type from the manifest)

A further layout plugs in by returning such a map: {parameter name: StoredTensor(reader, key)}
(`llava_folder_sources` and `causal_lm_sources` are the building blocks) and calling
sharded_load.fill_from_sources. A llava-ln run folder is not a partitioned start (its trained
tensors, LoRA included, are applied to a whole model): it is loaded whole, with a warning; merge it
first to start from it partitioned.
"""
import os
from collections.abc import Iterable

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from llava_ln.checkpoint.merged_folder import NON_NATIVE_STEM, quiet_transformers
from llava_ln.checkpoint.sharded_load import StoredTensor, fill_from_sources, stored_keys
from llava_ln.checkpoint.tensors import TensorReader, tensor_files
from llava_ln.core.constants import CONNECTOR_PREFIX
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.pretrained import load_pretrained
from llava_ln.model.backbones import load_vision_config
from llava_ln.model.builder import ModuleConstruct
from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE, build_connector
from llava_ln.model.llava_checkpoints import HF_LLAVA, ORIGINAL_LLAVA
from llava_ln.model.parts import connector_of, language_model_of, unwrap, vision_tower_of

WEIGHTS_STEM = "model"  # transformers' name for model.safetensors / model-0000k-of-0000n.safetensors


def safetensors_reader(path: str, flag: str) -> TensorReader:
    """The model.safetensors set of a local folder or a hub id (downloaded as from_pretrained would)."""
    folder = path
    if not os.path.isdir(path):
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(path, allow_patterns=["*.safetensors", "*.safetensors.index.json", "*.json"])
        except Exception as err:  # any hub failure ends as one line naming the flag
            raise LlavaLnError(f"{flag} {path!r}: cannot fetch its safetensors weights ({err})") from None
    if not tensor_files(folder, WEIGHTS_STEM):
        raise LlavaLnError(f"{flag} {path!r}: no model.safetensors there; ZeRO-3 loads partitions from safetensors "
                           "only (re-save it once with save_pretrained, or train with ZeRO-2)")
    return TensorReader(os.path.join(folder, WEIGHTS_STEM))


def _names(module) -> list:
    return [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]


def _prefixed(sources: dict, *, ours: str, theirs: str, names: Iterable[str]) -> dict:
    """Our name (ours + X) -> the source of theirs + X, for every X in names that the source has."""
    return {f"{ours}{name}": sources[f"{theirs}{name}"] for name in names if f"{theirs}{name}" in sources}


def causal_lm_sources(model, llm_config, path: str) -> dict:
    """The LLM's tensors of the composed model, stored as a causal LM at path (vocabulary rows may grow)."""
    with torch.device("meta"):
        meta_llm = AutoModelForCausalLM.from_config(llm_config)
    stored = stored_keys(meta_llm, safetensors_reader(path, "--model_name_or_path"))
    module_names = {id(m): n for n, m in meta_llm.named_modules()}
    body, head = module_names[id(meta_llm.base_model)], module_names[id(meta_llm.get_output_embeddings())]
    vocabulary = {id(p) for m in (meta_llm.get_input_embeddings(), meta_llm.get_output_embeddings())
                  for p in m.parameters()}
    for name, param in meta_llm.named_parameters(remove_duplicate=False):
        if id(param) in vocabulary and name in stored:
            stored[name] = StoredTensor(stored[name].reader, stored[name].key, grows=True,
                                        converted=stored[name].converted)
    sources = _prefixed(stored, ours="model.language_model.", theirs=f"{body}." if body else "",
                        names=_names(language_model_of(model)))
    sources.update(_prefixed(stored, ours="lm_head.", theirs=f"{head}.",
                             names=[n for n, _ in unwrap(model).lm_head.named_parameters()]))
    return sources


def tower_sources(model, tower_path: str) -> dict:
    vision_config, family = load_vision_config(tower_path)
    with torch.device("meta"):
        meta_tower = family.model_class._from_config(vision_config)
    stored = stored_keys(meta_tower, safetensors_reader(tower_path, "--vision_tower"))
    return _prefixed(stored, ours="model.vision_tower.", theirs="", names=_names(vision_tower_of(model)))


def llava_folder_sources(path: str, llava_config) -> dict:
    """Every tensor of a LlavaForConditionalGeneration folder (our names are Llava's), plus a merged folder's
    non-native side file."""
    with torch.device("meta"), quiet_transformers():
        shell = LlavaForConditionalGeneration(llava_config)
    sources = stored_keys(shell, safetensors_reader(path, "--model_name_or_path"))
    if tensor_files(path, NON_NATIVE_STEM):
        side = TensorReader(os.path.join(path, NON_NATIVE_STEM))
        sources.update({name: StoredTensor(side, name) for name in side.names()})
    return sources


def fill_start(model, model_args, source) -> None:
    """Fill a model that model.builder created partitioned (construct) from --model_name_or_path's files."""
    connector = frozenset(f"{CONNECTOR_PREFIX}{n}" for n, _ in connector_of(model).named_parameters())
    if source is not None and source.kind == HF_LLAVA:
        sources = llava_folder_sources(model_args.model_name_or_path, source.llava_config())
        if os.path.abspath(model_args.vision_tower) != os.path.abspath(source.vision_tower()):
            sources = {n: s for n, s in sources.items() if not n.startswith("model.vision_tower.")}
            sources.update(tower_sources(model, model_args.vision_tower))
        fill_from_sources(model, sources)
        return
    # A plain LLM (new connector), or original LLaVA (its connector is copied by run_start afterwards).
    llm_config = source.text_config() if source is not None and source.kind == ORIGINAL_LLAVA else \
        load_pretrained(AutoConfig, model_args.model_name_or_path)
    sources = causal_lm_sources(model, llm_config, model_args.model_name_or_path)
    sources.update(tower_sources(model, model_args.vision_tower))
    fill_from_sources(model, sources, skip=connector)


def build_merged_partitioned(path: str, projector_type: str, *, dtype: torch.dtype, attn_implementation: str,
                             construct: ModuleConstruct) -> LlavaForConditionalGeneration:
    """A merged llava-ln folder, created partitioned and filled shard by shard (what load_merged_model loads)."""
    with quiet_transformers():
        config = load_pretrained(LlavaConfig, path)
    with quiet_transformers(), construct():
        model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation,
                                                           dtype=dtype)
    model.tie_weights()  # skipped with the weight initialisation
    side = TensorReader(os.path.join(path, NON_NATIVE_STEM)) if tensor_files(path, NON_NATIVE_STEM) else None
    if projector_type != NATIVE_PROJECTOR_TYPE:
        with construct():
            model.model.multi_modal_projector = build_connector(projector_type, config)
    for name in side.names() if side else ():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr == "bias" and isinstance(module, torch.nn.Linear) and module.bias is None:
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=dtype))  # e.g. Phi's head bias
    sources = llava_folder_sources(path, config)
    ours = {n for n, _ in model.named_parameters()}
    fill_from_sources(model, {n: s for n, s in sources.items() if not n.startswith(CONNECTOR_PREFIX) or n in ours})
    return model
