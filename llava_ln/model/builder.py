"""Compose any causal LM, a CLIP/SigLIP tower and a new connector into LlavaForConditionalGeneration.

We do not subclass per LLM: the native Llava shell is created on the meta device and its
three parts are replaced by the already-loaded LLM backbone, LM head and vision tower, so
the result is an ordinary transformers model (generation, gradient checkpointing,
save_pretrained and export all work as upstream intends).

--model_name_or_path may also be a multimodal checkpoint (model.llava_checkpoints): its LLM, and for a
transformers LLaVA folder its tower and connector, come from it instead.

`construct` (ZeRO-3): the LLM and the tower (and a transformers LLaVA folder's connector) are created
from their configs inside a context that partitions them as they are created (deepspeed.zero.Init),
with no weight read; the caller then fills every tensor of theirs shard by shard
(llava_ln.checkpoint.partitioned_start). The vocabulary is sized for `<image>` in the config, and the
random draws that loading would have made for the grown rows are replayed, so whatever is initialised
next (a new connector, LoRA factors) gets exactly the values of the loading path.
"""
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import torch
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.core.pretrained import load_pretrained
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import (
    WEIGHT_LOAD_ERRORS,
    check_select_layer,
    load_vision_config,
    load_vision_tower,
    num_image_tokens,
    resolve_attn_implementation,
    select_strategy,
)
from llava_ln.model.connector import build_connector, projector_depth
from llava_ln.model.llava_checkpoints import HF_LLAVA, Source, detect_source

# A context-manager factory whose context creates modules partitioned, with no weight read (ZeRO-3's
# deepspeed.zero.Init): see the module docstring.
ModuleConstruct = Callable[[], AbstractContextManager]


@dataclass(frozen=True, kw_only=True)
class MultimodalSpec:
    """What was composed; written into every manifest so loading never guesses."""

    llm: str
    vision_tower: str
    mm_projector_type: str
    mm_vision_select_layer: int
    mm_vision_select_feature: str
    vision_feature_select_strategy: str
    image_token: str
    image_token_id: int
    num_image_tokens: int
    attn_implementation: str
    source: dict | None = None  # a multimodal --model_name_or_path: {"kind", "path"} (model.llava_checkpoints)
    vision_model_type: str | None = None  # the tower config's model_type (clip_vision_model, siglip_vision_model)

    def to_dict(self) -> dict:
        return asdict(self)


def _load_llm_config(path: str):
    if not path:
        raise LlavaLnError("--model_name_or_path is required")
    try:
        return load_pretrained(AutoConfig, path)
    except (OSError, ValueError) as err:
        raise LlavaLnError(f"--model_name_or_path {path!r}: cannot read a model config there ({err})") from None


def _llm_class(config):
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise LlavaLnError(f"{type(config).__name__} has no causal-LM class in transformers") from None


def _load_llm(path: str, dtype: torch.dtype, requested_attn: str, *, on_meta: bool, source: Source | None = None,
              vision_attn: str = "sdpa") -> PreTrainedModel:
    config = source.text_config() if source else _load_llm_config(path)
    attn_implementation = resolve_attn_implementation(requested_attn, _llm_class(config))
    if on_meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    if source:
        return source.load_llm(dtype, attn_implementation, vision_attn)
    try:
        return load_pretrained(AutoModelForCausalLM, path, dtype=dtype, attn_implementation=attn_implementation)
    except WEIGHT_LOAD_ERRORS as err:
        raise LlavaLnError(f"--model_name_or_path {path!r}: cannot load a causal LM ({short_reason(err)})") from None


def _construct_llm(config: PretrainedConfig, dtype: torch.dtype, requested_attn: str, *,
                   tokenizer: PreTrainedTokenizerBase | None, construct: ModuleConstruct) -> PreTrainedModel:
    """The LLM from its config inside construct(), with rows for `<image>`; its weights are left to the caller."""
    attn_implementation = resolve_attn_implementation(requested_attn, _llm_class(config))
    image_token_id = _image_token_id(tokenizer, config.vocab_size)
    if image_token_id >= config.vocab_size:
        _replay_vocab_growth_draws(config, attn_implementation, dtype, image_token_id=image_token_id)
        config.vocab_size = image_token_id + 1
    with construct():
        llm = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    llm.tie_weights()  # constructs that skip weight initialisation skip transformers' tying with it
    return llm


def _replay_vocab_growth_draws(config: PretrainedConfig, attn_implementation: str, dtype: torch.dtype, *,
                               image_token_id: int) -> None:
    """Make exactly the random draws that _grow_vocab_for's resize makes on the loading path (their values
    are overwritten; the draws decide what is initialised after them), on a shadow model whose only real
    tensors are the embedding matrices."""
    with torch.device("meta"):
        shadow = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    head = shadow.get_output_embeddings()
    tied = head is not None and head.weight is shadow.get_input_embeddings().weight
    shadow.get_input_embeddings().to_empty(device="cpu")
    if tied:
        shadow.tie_weights()  # to_empty gave the embedding a new tensor
    elif head is not None:
        head.to_empty(device="cpu")
    shadow.resize_token_embeddings(image_token_id + 1, mean_resizing=False)


def _image_token_id(tokenizer, llm_vocab_rows: int) -> int:
    """The id `<image>` has (or will have) in the vocabulary."""
    if tokenizer is None:
        # Config-only describe: the token is appended right after the existing rows.
        return llm_vocab_rows
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise LlavaLnError("the tokenizer has no <image> token; call llava_ln.model.tokens.prepare_tokenizer first")
    return token_id


def _grow_vocab_for(llm, image_token_id: int, on_meta: bool) -> None:
    rows = llm.get_input_embeddings().weight.shape[0]
    if image_token_id < rows:
        return
    llm.resize_token_embeddings(image_token_id + 1, mean_resizing=False)
    if on_meta:
        return
    # The <image> input row is always overwritten by image features; the output row only
    # must not make the model emit <image>. The mean of the existing rows is neutral and,
    # unlike transformers' sampled mean-resizing, identical every time the model is built.
    with torch.no_grad():
        for matrix in {id(m): m for m in (llm.get_input_embeddings().weight, llm.get_output_embeddings().weight)}.values():
            matrix[rows:] = matrix[:rows].mean(dim=0, keepdim=True)


def build_mllm(args: ModelArguments, tokenizer: PreTrainedTokenizerBase | None = None, *,
               dtype: torch.dtype = torch.float32, on_meta: bool = False,
               construct: ModuleConstruct | None = None) -> tuple[LlavaForConditionalGeneration, MultimodalSpec]:
    """Return (LlavaForConditionalGeneration, MultimodalSpec).

    tokenizer: a tokenizer already passed through prepare_tokenizer (None is allowed only on
    meta, for config-only parameter counting). dtype applies to every loaded weight.
    construct: a context-manager factory; when given, the parts are created inside it from their
    configs and NOT loaded (see the module docstring); a new connector is created as usual.
    """
    projector_depth(args.mm_projector_type)  # validate before any expensive load
    vision_config, family = load_vision_config(args.vision_tower)
    strategy = select_strategy(family, args.mm_vision_select_feature)
    check_select_layer(vision_config, args.mm_vision_select_layer)
    vision_attn = resolve_attn_implementation(args.attn_implementation, family.model_class)
    if tokenizer is None and not on_meta:
        raise LlavaLnError("a tokenizer is needed to build a model with weights")

    source = detect_source(args.model_name_or_path)
    if construct is not None:
        llm_config = source.text_config() if source else _load_llm_config(args.model_name_or_path)
        llm = _construct_llm(llm_config, dtype, args.attn_implementation, tokenizer=tokenizer, construct=construct)
        image_token_id = _image_token_id(tokenizer, llm.config.vocab_size)
    else:
        llm = _load_llm(args.model_name_or_path, dtype, args.attn_implementation, on_meta=on_meta, source=source,
                        vision_attn=vision_attn)
        image_token_id = _image_token_id(tokenizer, llm.get_input_embeddings().weight.shape[0])
        _grow_vocab_for(llm, image_token_id, on_meta)
    # A transformers LLaVA folder brings its own tower and connector (unless --vision_tower names another tower).
    own_parts = source is not None and source.kind == HF_LLAVA and not on_meta
    own_tower = own_parts and os.path.abspath(args.vision_tower) == os.path.abspath(source.vision_tower())

    if on_meta:
        with torch.device("meta"):
            vision = family.model_class._from_config(vision_config, attn_implementation=vision_attn)
    elif construct is not None:
        with construct():
            vision = family.model_class._from_config(vision_config, attn_implementation=vision_attn, dtype=dtype)
    elif own_tower:
        vision = source.load_vision()
    else:
        vision = load_vision_tower(args.vision_tower, dtype, vision_attn)

    n_tokens = num_image_tokens(vision.config, strategy)
    config = LlavaConfig(
        vision_config=vision.config,
        text_config=llm.config,
        image_token_index=image_token_id,
        image_seq_length=n_tokens,
        vision_feature_layer=args.mm_vision_select_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = llm.base_model
    model.lm_head = llm.get_output_embeddings()
    if own_parts and construct is not None:
        with construct():  # filled from the folder like the rest; created without drawing random numbers
            connector = build_connector(args.mm_projector_type, config)
    elif own_parts:
        connector = source.load_projector()
    else:
        with torch.device("meta" if on_meta else "cpu"):
            connector = build_connector(args.mm_projector_type, config)
    model.model.multi_modal_projector = connector.to(dtype=dtype)
    attn = llm.config._attn_implementation

    spec = MultimodalSpec(
        llm=_as_recorded_path(args.model_name_or_path),
        vision_tower=_as_recorded_path(args.vision_tower),
        mm_projector_type=args.mm_projector_type,
        mm_vision_select_layer=args.mm_vision_select_layer,
        mm_vision_select_feature=args.mm_vision_select_feature,
        vision_feature_select_strategy=strategy,
        image_token=IMAGE_TOKEN,
        image_token_id=image_token_id,
        num_image_tokens=n_tokens,
        attn_implementation=attn,
        source=source.record() if source else None,
        vision_model_type=vision.config.model_type,
    )
    return model, spec


def _as_recorded_path(path: str) -> str:
    # Local folders are recorded absolute so a manifest still resolves from another cwd.
    return os.path.abspath(path) if os.path.isdir(path) else path

