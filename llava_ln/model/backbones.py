"""The backbones' loading: the tokenizer (with `<image>`), the vision tower, and the attention kernel.

Tokenizer: `<image>` is added as one special token (an in-vocabulary id, which transformers'
LlavaForConditionalGeneration and vLLM expect, unlike original LLaVA's -200) and a pad token is
made sure of.

Vision tower: kept as the plain transformers vision model (CLIP or SigLIP) so that it sits
unchanged inside LlavaForConditionalGeneration; feature selection is expressed with Llava's own
config fields (vision_feature_layer, vision_feature_select_strategy).

Attention: "auto" picks, for each part (LLM, vision tower) separately, the best kernel that the
installed environment AND that model class support: flash_attention_2 > sdpa > eager (Gemma-2,
for example, has no SDPA path because of its logit soft-capping). An explicit request that
cannot be honoured is an error, never a silent downgrade.
"""
import importlib.util
import pickle
from dataclasses import KW_ONLY, dataclass

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.core.pretrained import load_pretrained

# ---- tokenizer ----

def prepare_tokenizer(tokenizer) -> int:
    """Add `<image>` as a special token if missing and make sure a pad token exists.

    Returns the image token id. The id lives inside the vocabulary (unlike original LLaVA's
    -200) because transformers' LlavaForConditionalGeneration and vLLM expect that.
    Padding reuses an existing token (unk, else eos) so that the vocabulary grows only by
    the image token; padded positions are masked, so which token is used does not matter.
    """
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        # special=True keeps the placeholder whole (never split into sub-words).
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise LlavaLnError("the tokenizer has no pad, unk or eos token to pad batches with")
        tokenizer.pad_token = fallback
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


# What from_pretrained raises on a damaged or hostile weight file, besides a missing one: a pickled
# .bin that names code (transformers reads .bin with torch.load(weights_only=True), which refuses it),
# a torn zip, a corrupt safetensors header.
WEIGHT_LOAD_ERRORS = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def load_tokenizer(path: str):
    """AutoTokenizer from a folder or hub id, prepared for multimodal use; clear error on failure."""
    from transformers import AutoTokenizer

    try:
        tokenizer = load_pretrained(AutoTokenizer, path)
    except (OSError, ValueError, TypeError) as err:
        raise LlavaLnError(f"cannot load a tokenizer from {path!r} ({err})") from None
    prepare_tokenizer(tokenizer)
    return tokenizer


# ---- vision tower ----

SELECT_FEATURES = ("patch", "cls_patch")


@dataclass(frozen=True)
class VisionFamily:
    name: str
    config_class: type
    model_class: type
    _: KW_ONLY
    has_cls_token: bool


# model_type of a full checkpoint or of its vision sub-config -> family.
VISION_FAMILIES = {
    "clip": VisionFamily("clip", CLIPVisionConfig, CLIPVisionModel, has_cls_token=True),
    "clip_vision_model": VisionFamily("clip", CLIPVisionConfig, CLIPVisionModel, has_cls_token=True),
    "siglip": VisionFamily("siglip", SiglipVisionConfig, SiglipVisionModel, has_cls_token=False),
    "siglip_vision_model": VisionFamily("siglip", SiglipVisionConfig, SiglipVisionModel, has_cls_token=False),
}


def _read_config(path: str):
    try:
        return load_pretrained(AutoConfig, path)
    except (OSError, ValueError) as err:
        raise LlavaLnError(f"--vision_tower {path!r}: cannot read a model config there ({err})") from None


def vision_family_of(config) -> VisionFamily:
    family = VISION_FAMILIES.get(getattr(config, "model_type", None))
    if family is None:
        raise LlavaLnError(
            f"vision tower of type {getattr(config, 'model_type', '?')!r} is not supported; "
            f"supported types: {', '.join(sorted(VISION_FAMILIES))}"
        )
    return family


def load_vision_config(path: str):
    """The vision sub-config of a CLIP/SigLIP checkpoint (full or vision-only, or inside a transformers LLaVA folder)."""
    if not path:
        raise LlavaLnError("--vision_tower is required")
    config = _read_config(path)
    if getattr(config, "model_type", None) == "llava":
        config = config.vision_config
    family = vision_family_of(config)
    return getattr(config, "vision_config", config), family


def select_strategy(family: VisionFamily, select_feature: str) -> str:
    """Map --mm_vision_select_feature to Llava's vision_feature_select_strategy.

    Llava's "default" drops the first position, which is right only for towers with a CLS
    token; for SigLIP (no CLS) every position is a patch, so "patch" means "full".
    """
    if select_feature not in SELECT_FEATURES:
        raise LlavaLnError(f"--mm_vision_select_feature {select_feature!r} is not one of {', '.join(SELECT_FEATURES)}")
    if not family.has_cls_token:
        if select_feature == "cls_patch":
            raise LlavaLnError(f"--mm_vision_select_feature cls_patch: a {family.name} tower has no CLS token")
        return "full"
    return "default" if select_feature == "patch" else "full"


def check_select_layer(vision_config, layer: int) -> None:
    # hidden_states has num_hidden_layers + 1 entries (the embeddings come first).
    count = vision_config.num_hidden_layers + 1
    if not -count <= layer < count:
        raise LlavaLnError(
            f"--mm_vision_select_layer {layer} is out of range for a tower with {vision_config.num_hidden_layers} layers"
        )


def num_image_tokens(vision_config, strategy: str) -> int:
    """How many positions one image occupies in the LLM sequence."""
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    family = vision_family_of(vision_config)
    extra = 1 if (family.has_cls_token and strategy == "full") else 0
    return patches + extra


def load_vision_tower(path: str, dtype, attn_implementation: str):
    """Load the tower's weights; frozen-ness is decided by the tuning module, not here."""
    _, family = load_vision_config(path)
    try:
        return load_pretrained(family.model_class, path, dtype=dtype, attn_implementation=attn_implementation)
    except WEIGHT_LOAD_ERRORS as err:
        raise LlavaLnError(f"--vision_tower {path!r}: cannot load weights ({short_reason(err)})") from None


# ---- attention implementation ----

ATTN_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")
_SUPPORT_FLAG = {"flash_attention_2": "_supports_flash_attn", "sdpa": "_supports_sdpa", "eager": None}


def flash_attention_available() -> tuple[bool, str]:
    """Return (usable, reason). FlashAttention-2 needs the flash_attn package and a CUDA device."""
    if importlib.util.find_spec("flash_attn") is None:
        return False, "the flash_attn package is not installed (pip install 'llava-ln[flash]')"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    try:
        import flash_attn  # noqa: F401  (import can fail on a CUDA/torch ABI mismatch)
    except Exception as err:  # the reason is reported to the user, not swallowed
        return False, f"flash_attn fails to import: {err}"
    return True, ""


def _class_supports(model_class, implementation: str) -> bool:
    flag = _SUPPORT_FLAG[implementation]
    return model_class is None or flag is None or bool(getattr(model_class, flag, False))


def resolve_attn_implementation(requested: str, model_class=None) -> str:
    """The attention implementation to load model_class with (None: environment check only)."""
    if requested not in ATTN_CHOICES:
        raise LlavaLnError(f"--attn_implementation {requested!r} is not one of {', '.join(ATTN_CHOICES)}")
    usable, reason = flash_attention_available()
    name = getattr(model_class, "__name__", "this model")
    if requested == "auto":
        candidates = (["flash_attention_2"] if usable else []) + ["sdpa", "eager"]
        return next(c for c in candidates if _class_supports(model_class, c))
    if requested == "flash_attention_2" and not usable:
        raise LlavaLnError(f"--attn_implementation flash_attention_2 cannot run here: {reason}; use sdpa or auto")
    if not _class_supports(model_class, requested):
        raise LlavaLnError(f"--attn_implementation {requested}: {name} does not support it; use auto")
    return requested
