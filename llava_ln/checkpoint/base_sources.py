"""What training starts from: a text-only LLM plus a vision tower, or a multimodal checkpoint (a merged folder).

`build_base` is the one place that turns --model_name_or_path into a model, for training and for
rebuilding a run's base when it is loaded:

  * a text-only LLM (any AutoModelForCausalLM folder or hub id) + --vision_tower: model.builder
    composes them with a new connector;
  * a merged llava-ln folder (manifest kind "merged"): the composed model as it was merged, its
    connector included (training on top of it is stage 2); its manifest supplies the tower, the
    connector type and the feature selection (`base_model_arguments`), its tokenizer already has
    `<image>`.

Under ZeRO-3 (`construct` given, see training/zero_init.py) either is created empty and partitioned
and then filled tensor by tensor from its safetensors files through `sharded_load`, each rank reading
only its partitions; otherwise it is loaded whole as before. The sources of a layout are a dict
{parameter name: StoredTensor}; a further multimodal layout (a transformers-native LLaVA folder, an
original LLaVA checkpoint) plugs in as one more entry of BASE_LAYOUTS: a `detect(path)` that returns a
MultimodalBase whose `sources(model)` names where each parameter is stored.
"""
import logging
import os
from dataclasses import dataclass, replace

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from llava_ln.checkpoint.manifest import MANIFEST_NAME, read_manifest
from llava_ln.checkpoint.merged_folder import NON_NATIVE_STEM, load_merged_model, quiet_transformers
from llava_ln.checkpoint.sharded_load import StoredTensor, fill_from_sources, stored_keys
from llava_ln.checkpoint.tensors import TensorReader, tensor_files
from llava_ln.core.constants import CONNECTOR_PREFIX, IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_vision_config, resolve_attn_implementation
from llava_ln.model.builder import MultimodalSpec, build_mllm
from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE, build_connector
from llava_ln.model.parts import connector_of, language_model_of, unwrap, vision_tower_of

logger = logging.getLogger(__name__)

WEIGHTS_STEM = "model"  # transformers' name for model.safetensors / model-0000k-of-0000n.safetensors


@dataclass
class BuiltBase:
    model: object  # LlavaForConditionalGeneration
    spec: MultimodalSpec
    connector_from_base: bool  # the connector came with the base (training on top is stage 2)


# ---- where the weights are ----

def safetensors_reader(path: str, flag: str) -> TensorReader:
    """The model.safetensors set of a local folder or a hub id (downloaded like from_pretrained would)."""
    folder = path
    if not os.path.isdir(path):
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(path, allow_patterns=["*.safetensors", "*.safetensors.index.json"])
        except Exception as err:  # any hub failure ends as one line naming the flag
            raise LlavaLnError(f"{flag} {path!r}: cannot fetch its safetensors weights ({err})") from None
    if not tensor_files(folder, WEIGHTS_STEM):
        raise LlavaLnError(f"{flag} {path!r}: no model.safetensors there; ZeRO-3 loads partitions from safetensors "
                           "only (re-save it once with save_pretrained, or train with ZeRO-2)")
    return TensorReader(os.path.join(folder, WEIGHTS_STEM))


def _prefixed(sources: dict, ours: str, theirs: str, names) -> dict:
    """Our name (ours + X) -> the source of theirs + X, for every X in names that the source has."""
    return {f"{ours}{name}": sources[f"{theirs}{name}"] for name in names if f"{theirs}{name}" in sources}


def llm_and_tower_sources(model, model_args: ModelArguments) -> dict:
    """Sources of every LLM and tower tensor of a model composed by build_mllm (the connector is new)."""
    llm_config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    with torch.device("meta"):
        meta_llm = AutoModelForCausalLM.from_config(llm_config)
    llm_sources = stored_keys(meta_llm, safetensors_reader(model_args.model_name_or_path, "--model_name_or_path"))
    names = {id(m): n for n, m in meta_llm.named_modules()}
    base_prefix = names[id(meta_llm.base_model)]
    head_prefix = names[id(meta_llm.get_output_embeddings())]
    vocabulary = {id(p) for m in (meta_llm.get_input_embeddings(), meta_llm.get_output_embeddings())
                  for p in m.parameters()}
    grows = {n for n, p in meta_llm.named_parameters(remove_duplicate=False) if id(p) in vocabulary}
    llm_sources = {n: replace(s, grows=n in grows) for n, s in llm_sources.items()}

    language_model = language_model_of(model)
    body = [n for n, _ in language_model.named_parameters()] + [n for n, _ in language_model.named_buffers()]
    head = [n for n, _ in unwrap(model).lm_head.named_parameters()]
    sources = _prefixed(llm_sources, "model.language_model.", f"{base_prefix}." if base_prefix else "", body)
    sources.update(_prefixed(llm_sources, "lm_head.", f"{head_prefix}.", head))

    vision_config, family = load_vision_config(model_args.vision_tower)
    with torch.device("meta"):
        meta_tower = family.model_class._from_config(vision_config)
    tower_sources = stored_keys(meta_tower, safetensors_reader(model_args.vision_tower, "--vision_tower"))
    tower = vision_tower_of(model)
    tower_names = [n for n, _ in tower.named_parameters()] + [n for n, _ in tower.named_buffers()]
    sources.update(_prefixed(tower_sources, "model.vision_tower.", "", tower_names))
    return sources


# ---- a merged llava-ln folder as the base ----

@dataclass(frozen=True)
class MultimodalBase:
    """A multimodal checkpoint to start training from, read from its folder's own records."""

    path: str
    config: LlavaConfig
    mm_projector_type: str
    mm_vision_select_layer: int
    mm_vision_select_feature: str

    def arguments(self, model_args: ModelArguments) -> ModelArguments:
        """The flags as this base fixes them (its tower, connector type and feature selection)."""
        fixed = dict(vision_tower=self.path, mm_projector_type=self.mm_projector_type,
                     mm_vision_select_layer=self.mm_vision_select_layer,
                     mm_vision_select_feature=self.mm_vision_select_feature)
        for key, value in fixed.items():
            given = getattr(model_args, key)
            if given is not None and given != value:
                logger.warning("--%s %s ignored: the base %s fixes it (%s)", key, given, self.path, value)
        return replace(model_args, **fixed)

    def spec(self, attn_implementation: str) -> MultimodalSpec:
        return MultimodalSpec(
            llm=self.path, vision_tower=self.path, mm_projector_type=self.mm_projector_type,
            mm_vision_select_layer=self.mm_vision_select_layer, mm_vision_select_feature=self.mm_vision_select_feature,
            vision_feature_select_strategy=self.config.vision_feature_select_strategy, image_token=IMAGE_TOKEN,
            image_token_id=self.config.image_token_id, num_image_tokens=self.config.image_seq_length,
            attn_implementation=attn_implementation)

    def sources(self, model) -> dict:
        """Native tensors through transformers' renaming of Llava's stored keys; the rest (a non-native
        connector, an LM head bias) under our own names in the side file."""
        with torch.device("meta"):
            shell = LlavaForConditionalGeneration(self.config)
        sources = stored_keys(shell, TensorReader(os.path.join(self.path, WEIGHTS_STEM)))
        if tensor_files(self.path, NON_NATIVE_STEM):
            side = TensorReader(os.path.join(self.path, NON_NATIVE_STEM))
            sources.update({name: StoredTensor(side, name) for name in side.names()})
        ours = dict(unwrap(model).named_parameters())
        if self.mm_projector_type != NATIVE_PROJECTOR_TYPE:  # the shell's native projector is not ours
            sources = {n: s for n, s in sources.items() if not n.startswith(CONNECTOR_PREFIX) or n in ours}
        return sources

    def build(self, tokenizer, dtype, attn_implementation: str, on_meta: bool, construct):
        if tokenizer is not None and tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != self.config.image_token_id:
            raise LlavaLnError(f"{self.path}: config.json says the image token is id {self.config.image_token_id}, "
                               f"the tokenizer gives <image> id {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}")
        if not (on_meta or construct):
            return load_merged_model(self.path, self.mm_projector_type, dtype=dtype,
                                     attn_implementation=attn_implementation)
        if on_meta:
            with torch.device("meta"):
                model = LlavaForConditionalGeneration._from_config(self.config, attn_implementation=attn_implementation)
        else:
            with quiet_transformers(), construct():
                model = LlavaForConditionalGeneration._from_config(self.config, attn_implementation=attn_implementation,
                                                                   dtype=dtype)
            model.tie_weights()
        self._make_room(model, dtype, on_meta)
        if not on_meta:
            fill_from_sources(model, self.sources(model))
        return model

    def _make_room(self, model, dtype, on_meta: bool) -> None:
        """A non-native connector and the non-native tensors (an LM head bias) the native class lacks."""
        device = torch.device("meta" if on_meta else "cpu")
        if self.mm_projector_type != NATIVE_PROJECTOR_TYPE:
            with device:
                model.model.multi_modal_projector = build_connector(self.mm_projector_type, self.config).to(dtype)
        if not tensor_files(self.path, NON_NATIVE_STEM):
            return
        for name in TensorReader(os.path.join(self.path, NON_NATIVE_STEM)).names():
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if attr == "bias" and isinstance(module, torch.nn.Linear) and module.bias is None:
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=dtype, device=device))


def merged_folder_base(path: str) -> MultimodalBase | None:
    """A merged llava-ln folder (manifest kind "merged") as a training base; None for anything else."""
    if not path or not os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        return None
    manifest = read_manifest(path)
    if manifest.kind != "merged":
        raise LlavaLnError(f"--model_name_or_path {path}: a run folder is not a base; merge it first "
                           f"(llava-ln merge --checkpoint {path} --output_dir MERGED) and start from MERGED")
    with quiet_transformers():
        config = LlavaConfig.from_pretrained(path)
    return MultimodalBase(path=os.path.abspath(path), config=config, mm_projector_type=manifest.mm_projector_type,
                          mm_vision_select_layer=manifest.mm_vision_select_layer,
                          mm_vision_select_feature=manifest.mm_vision_select_feature)


# Multimodal layouts a base may have, tried in order; each returns a MultimodalBase or None.
BASE_LAYOUTS = (merged_folder_base,)


def multimodal_base(path: str) -> MultimodalBase | None:
    for detect in BASE_LAYOUTS:
        base = detect(path)
        if base is not None:
            return base
    return None


def base_model_arguments(model_args: ModelArguments) -> ModelArguments:
    """model_args with what a multimodal base fixes filled in (unchanged for a text-only LLM)."""
    base = multimodal_base(model_args.model_name_or_path)
    return base.arguments(model_args) if base else model_args


def build_base(model_args: ModelArguments, tokenizer=None, *, dtype=torch.float32, on_meta: bool = False,
               construct=None) -> BuiltBase:
    """The model training starts from (module docstring); `construct`: ZeRO-3's partitioned creation."""
    base = multimodal_base(model_args.model_name_or_path)
    if base is None:
        model, spec = build_mllm(model_args, tokenizer, dtype=dtype, on_meta=on_meta, construct=construct)
        if construct is not None:
            connector = {f"{CONNECTOR_PREFIX}{n}" for n, _ in connector_of(model).named_parameters()}
            fill_from_sources(model, llm_and_tower_sources(model, model_args), skip=frozenset(connector))
        return BuiltBase(model, spec, connector_from_base=False)
    attn = resolve_attn_implementation(model_args.attn_implementation, LlavaForConditionalGeneration)
    model = base.build(tokenizer, dtype, attn, on_meta, construct)
    return BuiltBase(model, base.spec(model.config.text_config._attn_implementation or attn), connector_from_base=True)
