"""Sort every parameter of a composed model into one of nine groups.

Groups are decided by module identity (which part owns the tensor) and norm modules by
class, never by parameter-name substrings, so the rules hold for any LLM family and any tower.
The vision tower splits like the LLM: its norms, its LoRA factors (--vision_tune_mode lora) and
every other tower weight.
"""
from collections import OrderedDict

from torch import nn

from llava_ln.model.parts import (
    connector_of,
    input_embeddings_of,
    is_norm_module,
    language_model_of,
    lm_head_of,
    unwrap,
    vision_tower_of,
)

GROUPS = ("vision_norms", "vision_other", "vision_lora", "connector", "llm_norms", "embeddings", "lm_head", "llm_other",
          "lora")


def _ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def _norm_ids(module: nn.Module) -> set[int]:
    """Parameters of every norm module inside module (found by class, model.parts.is_norm_module)."""
    return {key for sub in module.modules() if is_norm_module(sub) for key in _ids(sub)}


def _adapter_ids(model) -> set[int]:
    """Parameters of PEFT adapter layers (LoRA's A/B factors, DoRA magnitudes), found by layer type."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    ids = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for attribute in module.adapter_layer_names:
                ids |= _ids(getattr(module, attribute))
    return ids


def classify_parameters(model) -> "OrderedDict[str, str]":
    """Map each parameter name (relative to the Llava model, tied tensors once) to its group."""
    llava = unwrap(model)
    language_model = language_model_of(model)
    vision_ids = _ids(vision_tower_of(model))
    connector_ids = _ids(connector_of(model))
    embedding_ids = _ids(input_embeddings_of(model))
    head_ids = _ids(lm_head_of(model)) - embedding_ids  # a tied head is the embedding tensor
    norm_ids = _norm_ids(language_model)
    vision_norm_ids = _norm_ids(vision_tower_of(model))
    llm_ids = _ids(language_model)
    adapter_ids = _adapter_ids(llava)

    groups = OrderedDict()
    for name, param in llava.named_parameters():  # named_parameters yields a tied tensor once
        key = id(param)
        if key in adapter_ids:
            group = "vision_lora" if key in vision_ids else "lora"
        elif key in vision_ids:
            group = "vision_norms" if key in vision_norm_ids else "vision_other"
        elif key in connector_ids:
            group = "connector"
        elif key in embedding_ids:
            group = "embeddings"
        elif key in head_ids:
            group = "lm_head"
        elif key in norm_ids:
            group = "llm_norms"
        elif key in llm_ids:
            group = "llm_other"
        else:
            raise ValueError(f"parameter {name} belongs to no known part of the model")
        groups[name] = group
    return groups
