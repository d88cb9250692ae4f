"""Loading the frozen vision encoder (CLIP or SigLIP) and describing which features it yields.

The tower is kept as the plain transformers vision model so that it sits unchanged inside
LlavaForConditionalGeneration; feature selection is expressed with Llava's own config
fields (vision_feature_layer, vision_feature_select_strategy).
"""
from dataclasses import dataclass

from transformers import AutoConfig, CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from llava_ln.core.errors import LlavaLnError

SELECT_FEATURES = ("patch", "cls_patch")


@dataclass(frozen=True)
class VisionFamily:
    name: str
    config_class: type
    model_class: type
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
        return AutoConfig.from_pretrained(path)
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
    """The vision sub-config of a CLIP/SigLIP checkpoint (full or vision-only)."""
    if not path:
        raise LlavaLnError("--vision_tower is required")
    config = _read_config(path)
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
        return family.model_class.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    except (OSError, ValueError) as err:
        raise LlavaLnError(f"--vision_tower {path!r}: cannot load weights ({err})") from None
