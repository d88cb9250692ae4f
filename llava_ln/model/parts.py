"""Named access to the parts of a composed model, whether or not PEFT has wrapped it, and which modules are norms."""
import re

from torch import nn


def unwrap(model):
    """The LlavaForConditionalGeneration inside a PeftModel (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def language_model_of(model):
    return unwrap(model).model.language_model


def vision_tower_of(model):
    return unwrap(model).model.vision_tower


def connector_of(model):
    return unwrap(model).model.multi_modal_projector


def input_embeddings_of(model):
    return language_model_of(model).get_input_embeddings()


def lm_head_of(model):
    return unwrap(model).lm_head


def decoder_layers_of(model):
    """The ModuleList of transformer blocks of the LLM, found by structure, not by name.

    Families name it differently (`layers`, `h`, `blocks`); it is the ModuleList whose
    length is the config's num_hidden_layers.
    """
    language_model = language_model_of(model)
    expected = getattr(language_model.config, "num_hidden_layers", None)
    candidates = [m for m in language_model.modules() if isinstance(m, nn.ModuleList) and len(m) == expected]
    if len(candidates) != 1:
        raise ValueError(
            f"cannot find the decoder blocks of {type(language_model).__name__}: "
            f"{len(candidates)} ModuleLists of length {expected}"
        )
    return candidates[0]


_NORM_BASES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)
# Hugging Face families define their own norm classes (LlamaRMSNorm, GemmaRMSNorm,
# CohereLayerNorm, T5LayerNorm, ...); the class-name suffix is the shared convention.
_NORM_CLASS_NAME = re.compile(r"(RMS|Layer|Group)Norm\d*$")


def is_norm_module(module: nn.Module) -> bool:
    return isinstance(module, _NORM_BASES) or bool(_NORM_CLASS_NAME.search(type(module).__name__))
