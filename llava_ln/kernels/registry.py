"""Which transformers modules have a lean replacement, recognised by exact class, and how they are laid out.

Classes are matched by (defining module, class name) of the module's own type, so a subclass
that overrides forward is never mistaken for its parent and nothing is imported to match.
Everything family-specific lives in the three tables below; a family whose classes are not
listed is left untouched (and its norm/MLP classes are named in the KernelReport).
"""
import re
from dataclasses import dataclass

from llava_ln.model.parts import is_norm_module


@dataclass(frozen=True)
class NormSpec:
    style: str  # see norms.NORM_STYLES
    eps_attribute: str


@dataclass(frozen=True)
class MlpSpec:
    gated: bool
    projections: tuple[str, ...]  # (gate, up, down) when gated, (in, out) otherwise
    activation_attribute: str


_LLAMA_STYLE = NormSpec("llama", "variance_epsilon")
_GEMMA_STYLE = NormSpec("gemma", "eps")
_GATED = MlpSpec(True, ("gate_proj", "up_proj", "down_proj"), "act_fn")


def _hf(family: str, name: str) -> tuple[str, str]:
    return f"transformers.models.{family}.modeling_{family}", name


NORMS = {
    _hf("llama", "LlamaRMSNorm"): _LLAMA_STYLE,
    _hf("mistral", "MistralRMSNorm"): _LLAMA_STYLE,
    _hf("qwen2", "Qwen2RMSNorm"): _LLAMA_STYLE,
    _hf("gemma", "GemmaRMSNorm"): _GEMMA_STYLE,
    _hf("gemma2", "Gemma2RMSNorm"): _GEMMA_STYLE,
    ("torch.nn.modules.normalization", "LayerNorm"): NormSpec("layer", "eps"),  # Phi, GPT-NeoX
}

MLPS = {
    _hf("llama", "LlamaMLP"): _GATED,
    _hf("mistral", "MistralMLP"): _GATED,
    _hf("qwen2", "Qwen2MLP"): _GATED,
    _hf("gemma", "GemmaMLP"): _GATED,
    _hf("gemma2", "Gemma2MLP"): _GATED,
    _hf("phi", "PhiMLP"): MlpSpec(False, ("fc1", "fc2"), "activation_fn"),
    _hf("gpt_neox", "GPTNeoXMLP"): MlpSpec(False, ("dense_h_to_4h", "dense_4h_to_h"), "act"),
}

# transformers.activations classes (and torch's SiLU) by the function they compute.
ACTIVATIONS = {
    ("transformers.activations", "SiLUActivation"): "silu",
    ("torch.nn.modules.activation", "SiLU"): "silu",
    ("transformers.activations", "GELUTanh"): "gelu_tanh",
    ("transformers.activations", "PytorchGELUTanh"): "gelu_tanh",  # the name before transformers 4.57
    ("transformers.activations", "NewGELUActivation"): "gelu_tanh",
    ("transformers.activations", "FastGELUActivation"): "gelu_tanh",
    ("transformers.activations", "GELUActivation"): "gelu",
    ("torch.nn.modules.activation", "GELU"): None,  # resolved from its `approximate` attribute
}

_MLP_NAME = re.compile(r"(MLP|FeedForward|FFN)$")


def class_key(module) -> tuple[str, str]:
    cls = type(module)
    return cls.__module__, cls.__qualname__


def looks_like_norm(module) -> bool:
    """What the tuning modes count as a norm (model.parts.is_norm_module), for reporting classes left untouched."""
    return is_norm_module(module)


def looks_like_mlp(module) -> bool:
    return bool(_MLP_NAME.search(type(module).__name__))


def norm_spec(module) -> NormSpec | None:
    spec = NORMS.get(class_key(module))
    if spec is None:
        return None
    if spec.style == "layer" and len(module.normalized_shape) != 1:
        return None  # normalises more than the last dimension
    return spec


def activation_kind(act) -> str | None:
    key = class_key(act)
    if key not in ACTIVATIONS:
        return None
    if key == ("torch.nn.modules.activation", "GELU"):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    return ACTIVATIONS[key]
