"""Start a run from a multimodal checkpoint: the flags it fixes, and the model it computes, exactly.

--model_name_or_path may be (model.llava_checkpoints for the first two):
  * a transformers LLaVA folder (LlavaForConditionalGeneration), e.g. a llava-hf model or our export;
  * an original LLaVA checkpoint (LlavaLlamaForCausalLM / LlavaMistralForCausalLM layout);
  * a llava-ln run folder, checkpoint-<step>, merged or exported folder (it has manifest.json):
    opened with load_checkpoint, LoRA folded in, and trained on top.

resolve_start fills the flags the checkpoint decides (connector type, feature layer and selection,
vision tower, tokenizer, template, image squaring) unless they were given explicitly; an explicit
value that contradicts the checkpoint is refused, since it would silently discard what it holds
(the tower alone may be renamed, as LLaVA's own --vision_tower does). build_start_model builds the
model the checkpoint describes; a run records the source in its manifest (`source`), and
load_checkpoint rebuilds a run through build_start_model too. Original LLaVA keeps its connector
beside the LLM's weights as `model.mm_projector.*`: those tensors alone are read here (safetensors
lazily, `.bin` tensor-only).
"""
import logging
import os
from dataclasses import dataclass, replace

import torch
from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerBase

from llava_ln.checkpoint.manifest import MANIFEST_NAME
from llava_ln.checkpoint.run_folder import connector_name, connector_parameters
from llava_ln.checkpoint.tensors import TensorReader, assign_tensors, load_torch_tensors_safely
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.constants import CONNECTOR_PREFIX, IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import ModuleConstruct, MultimodalSpec, build_mllm
from llava_ln.model.llava_checkpoints import HF_LLAVA, ORIGINAL_LLAVA, detect_source
from llava_ln.model.parts import unwrap

logger = logging.getLogger(__name__)

LLAVA_LN = "llava_ln"
MODEL_SETTINGS = ("mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature")
# Original LLaVA-1.5's template when a script names none (its finetune scripts pass --version v1).
ORIGINAL_DEFAULT_TEMPLATE = "vicuna_v1"


@dataclass(frozen=True)
class StartSource:
    kind: str  # hf_llava | llava | llava_ln
    path: str
    decided: dict  # flag -> value taken from the checkpoint

    def record(self) -> dict:
        return {"kind": self.kind, "path": os.path.abspath(self.path) if os.path.isdir(self.path) else self.path}


def is_llava_ln_folder(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, MANIFEST_NAME))


# ---- the flags a checkpoint decides ----

def resolve_start(model_args, data_args, explicit: set) -> StartSource | None:
    """Fill model_args / data_args from a multimodal --model_name_or_path (in place); None for a plain LLM.

    explicit: names of the flags given on the command line (those win, or conflict).
    """
    path = model_args.model_name_or_path
    if is_llava_ln_folder(path):
        from llava_ln.checkpoint.loading import effective_manifest

        manifest = effective_manifest(path)
        kind, model_values = LLAVA_LN, {name: getattr(manifest, name) for name in MODEL_SETTINGS}
        tower, tokenizer = manifest.vision_tower, manifest.tokenizer
        template, aspect = manifest.conv_template, manifest.image_aspect_ratio
    else:
        source = detect_source(path)
        if source is None:
            return None
        kind, model_values = source.kind, source.settings()
        tower, tokenizer = source.vision_tower(), path
        template, aspect = None, source.image_aspect_ratio()
    decided = {}
    for name, value in model_values.items():
        _take(model_args, name, value, explicit=explicit, path=path, decided=decided)
    if "vision_tower" in explicit and model_args.vision_tower != tower:
        if kind == LLAVA_LN:
            raise LlavaLnError(f"--vision_tower {model_args.vision_tower}: {path} is a llava-ln checkpoint with its own "
                               f"tower ({tower}); drop --vision_tower")
        logger.warning("--vision_tower %s replaces the tower %s names (%s); its connector was trained on that one",
                       model_args.vision_tower, path, tower)
    else:
        model_args.vision_tower = decided["vision_tower"] = tower
    if "tokenizer_name_or_path" not in explicit:
        model_args.tokenizer_name_or_path = decided["tokenizer_name_or_path"] = tokenizer
    if "conv_template" not in explicit:
        data_args.conv_template = decided["conv_template"] = template or _default_template(kind, path)
    if "image_aspect_ratio" not in explicit and aspect:
        data_args.image_aspect_ratio = decided["image_aspect_ratio"] = aspect
    start = StartSource(kind, path, decided)
    logger.info("starting from %s (%s): %s", path, kind, ", ".join(f"{k}={v}" for k, v in decided.items()))
    return start


def _take(model_args: ModelArguments, name: str, value: str | int, *, explicit: set, path: str, decided: dict) -> None:
    given = getattr(model_args, name)
    if name in explicit and given != value:
        raise LlavaLnError(f"--{name} {given}: {path} was built with {name} {value}; a different value would discard "
                           f"its connector (drop the flag, or pass {value})")
    setattr(model_args, name, value)
    decided[name] = value


def _default_template(kind: str, path: str) -> str:
    if kind == ORIGINAL_LLAVA:
        logger.warning("%s does not record its conversation template: using %s (LLaVA-1.5's `--version v1`); pass "
                       "--conv_template or --version to choose another", path, ORIGINAL_DEFAULT_TEMPLATE)
        return ORIGINAL_DEFAULT_TEMPLATE
    check_chat_template(path)
    return "auto"


def check_chat_template(path: str) -> None:
    """A transformers LLaVA folder's own chat template must render plain-text messages faithfully."""
    from llava_ln.model.backbones import load_tokenizer

    tokenizer = load_tokenizer(path)
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise LlavaLnError(f"--model_name_or_path {path}: its tokenizer has no chat template; pass --conv_template "
                           "(vicuna_v1 for LLaVA-1.5 models)")
    probe = [{"role": "user", "content": f"{IMAGE_TOKEN}\nping question"}, {"role": "assistant", "content": "pong reply"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception as err:  # a Jinja template can raise anything; the user needs the reason
        raise LlavaLnError(f"--model_name_or_path {path}: its chat template fails on text messages ({err}); pass "
                           "--conv_template") from None
    if "ping question" not in text or "pong reply" not in text or IMAGE_TOKEN not in text:
        raise LlavaLnError(f"--model_name_or_path {path}: its chat template drops plain-text message content (it "
                           "expects content parts); pass --conv_template (vicuna_v1 for LLaVA-1.5 models)")


# ---- the model a checkpoint computes ----

def build_start_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase | None, dtype: torch.dtype, *,
                      on_meta: bool = False, construct: ModuleConstruct | None = None,
                      ) -> tuple[LlavaForConditionalGeneration, MultimodalSpec]:
    """(LlavaForConditionalGeneration, MultimodalSpec) as the start of a run: a plain LLM composed with a tower
    and a new connector, or the multimodal checkpoint --model_name_or_path names, unchanged.

    construct (ZeRO-3, training/zero/partitioned_init.py): the model is created partitioned and filled shard by shard
    (checkpoint.partitioned_start), the same values as loading gives."""
    path = model_args.model_name_or_path
    if is_llava_ln_folder(path):
        return _from_llava_ln(path, model_args, tokenizer, dtype=dtype, on_meta=on_meta, construct=construct)
    model, spec = build_mllm(model_args, tokenizer, dtype=dtype, on_meta=on_meta, construct=construct)
    if construct is not None:
        from llava_ln.checkpoint.partitioned_start import fill_start

        fill_start(model, model_args, detect_source(path))
    if spec.source and spec.source["kind"] == HF_LLAVA:
        check_image_token(path, model, tokenizer)
    if spec.source and spec.source["kind"] == ORIGINAL_LLAVA and not on_meta:
        load_original_connector(model, path)
    return model, spec


def check_image_token(path: str, model, tokenizer) -> None:
    """A transformers LLaVA folder's config and tokenizer must agree on <image> (the model was built from the latter)."""
    token_id, configured = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), detect_source(path).image_token_id()
    if configured != token_id or unwrap(model).config.image_token_id != token_id:
        raise LlavaLnError(f"--model_name_or_path {path}: its config's image token id is {configured}, its tokenizer "
                           f"gives <image> id {token_id}")


def _from_llava_ln(path: str, model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase | None, *,
                   dtype: torch.dtype, on_meta: bool, construct: ModuleConstruct | None,
                   ) -> tuple[LlavaForConditionalGeneration, MultimodalSpec]:
    from llava_ln.checkpoint.loading import effective_manifest, load_checkpoint, model_arguments_from

    manifest = effective_manifest(path)
    meta_model, spec = build_mllm(model_arguments_from(manifest, model_args.attn_implementation), tokenizer,
                                  on_meta=True)
    spec = replace(spec, llm=os.path.abspath(path), source={"kind": LLAVA_LN, "path": os.path.abspath(path)})
    if on_meta:
        return meta_model, spec
    del meta_model
    if construct is not None and manifest.kind == "merged":
        from llava_ln.checkpoint.merged_folder import merged_image_token_check
        from llava_ln.checkpoint.partitioned_start import build_merged_partitioned
        from llava_ln.model.backbones import resolve_attn_implementation

        attn = resolve_attn_implementation(model_args.attn_implementation)
        model = build_merged_partitioned(path, manifest.mm_projector_type, dtype=dtype, attn_implementation=attn,
                                         construct=construct)
        merged_image_token_check(path, model, tokenizer)
        return model.train(), replace(spec, attn_implementation=model.config.text_config._attn_implementation)
    if construct is not None:
        logger.warning("%s is a run folder: under ZeRO-3 it is loaded whole on every rank, then partitioned; merge "
                       "it (llava-ln merge) to start from it partitioned", path)
    loaded = load_checkpoint(path, dtype=dtype, attn_implementation=model_args.attn_implementation)
    model = loaded.model
    if unwrap(model) is not model:
        model = model.merge_and_unload()  # LoRA folded in: the new run trains on the model the source computes
    model.train()
    return model, replace(spec, attn_implementation=unwrap(model).config.text_config._attn_implementation)


# ---- original LLaVA's connector tensors ----

def load_original_connector(model, path: str) -> None:
    """Copy `model.mm_projector.*` from an original LLaVA checkpoint's weight files into the connector."""
    files = _weight_files(path)
    found = {}
    for file in files:
        if file.endswith(".safetensors"):
            reader = TensorReader(file)
            names = [n for n in reader.names() if connector_name(n) and "mm_projector" in n]
            found.update({connector_name(n): reader.get(n) for n in names})
        else:
            found.update({connector_name(n): t for n, t in load_torch_tensors_safely(file).items()
                          if connector_name(n) and "mm_projector" in n})
    expected = set(connector_parameters(model))
    missing = sorted(expected - set(found))
    if missing:
        what = f"tensor {missing[0].replace(CONNECTOR_PREFIX, 'model.mm_projector.')} (as {missing[0]})"
        raise LlavaLnError(f"--model_name_or_path {path}: no connector {what} in its weights "
                           f"({', '.join(os.path.basename(f) for f in files)}); is mm_projector_type right?")
    assign_tensors(model, {n: t for n, t in found.items() if n in expected}, source=path)


def _weight_files(path: str) -> list:
    """The checkpoint files that hold mm_projector tensors (by the shard index, when there is one)."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = _local_or_cached(path, index_name)
        if index:
            weight_map = read_json_object(index).get("weight_map", {})
            names = sorted({file for key, file in weight_map.items() if "mm_projector" in key})
            for name in names:
                if os.path.basename(name) != name:
                    raise LlavaLnError(f"{index} names {name!r}, which is not a file beside it")
            return [_local_or_cached(path, name, required=True) for name in names]
        file = _local_or_cached(path, single)
        if file:
            return [file]
    raise LlavaLnError(f"--model_name_or_path {path}: no model.safetensors or pytorch_model.bin (nor a shard index)")


def _local_or_cached(path: str, name: str, required: bool = False) -> str | None:
    if os.path.isdir(path):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            return file
        if required:
            raise LlavaLnError(f"{path}: weight file {name} is missing")
        return None
    from transformers.utils import cached_file

    try:
        return cached_file(path, name, _raise_exceptions_for_missing_entries=required)
    except OSError as err:
        raise LlavaLnError(f"--model_name_or_path {path}: cannot fetch {name} ({err})") from None

