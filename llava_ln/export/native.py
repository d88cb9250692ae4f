"""What transformers' own LlavaForConditionalGeneration can and cannot hold of a composed model.

The native class has a fixed two-layer GELU projector and a bias-free LM head. llava-ln can
build models outside that (a `linear` or `mlp3x_gelu` connector; an LLM whose head has a
bias, such as Phi). Such tensors are "non-native": a merged folder stores them in a side
file so llava-ln restores them on load, and `export --format hf` refuses the model with an
explanation instead of writing a folder that loads with silently re-initialised weights.
"""
import torch
from transformers import LlavaForConditionalGeneration

from llava_ln.model.connector import NATIVE_PROJECTOR_TYPE
from llava_ln.model.parts import unwrap

CONNECTOR_PREFIX = "model.multi_modal_projector."


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


def missing_native_parameters(model) -> list:
    """Native parameters our model does not have (the native class would initialise them randomly)."""
    llava = unwrap(model)
    ours = {name for name, _ in llava.named_parameters()}
    return sorted(set(native_parameter_shapes(llava.config)) - ours)


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
