"""Swap the lean kernels into an LLM: `apply_kernels(model, "auto"|"torch"|"liger"|"none") -> KernelReport`.

Each matching norm or MLP module of the language model (by exact class, see registry.py) gets
an instance-level `forward` that calls the lean function; its class, parameters, buffers,
state_dict names and hooks are unchanged, so checkpoints, PEFT, export and gradient
checkpointing see the same module. A swapped MLP still calls its own projection submodules, so
LoRA-wrapped projections keep working. The vision tower and the connector are not touched.

The language model also records the backend (kernel_backend_of), which the training loss follows:
the fused head + loss (loss.py) runs exactly when the lean modules do.

Backends: "torch" = the autograd functions of this package; "liger" = liger-kernel's fused
Triton kernels where they cover a module (CUDA only), the torch function elsewhere; "auto" =
liger on CUDA when it imports, else torch; "none" = transformers' modules as they are.
"""
import logging
import types
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from llava_ln.core.errors import LlavaLnError
from llava_ln.kernels import KERNEL_CHOICES, liger
from llava_ln.kernels.activations import activation, gated_activation
from llava_ln.kernels.norms import lean_norm
from llava_ln.kernels.registry import MLPS, activation_kind, class_key, looks_like_mlp, looks_like_norm, norm_spec
from llava_ln.model.parts import language_model_of, unwrap

logger = logging.getLogger(__name__)

_MARK = "_llava_ln_kernel"  # instance attribute naming the swapped-in implementation
_BACKEND_MARK = "_llava_ln_kernel_backend"  # on the language model: the backend apply_kernels used


def resolve_kernel_backend(choice: str, device=None) -> tuple[str, str]:
    """(backend, reason) for --kernels `choice` on `device` (default: CUDA when available)."""
    if choice not in KERNEL_CHOICES:
        raise LlavaLnError(f"--kernels {choice!r} is not one of {', '.join(KERNEL_CHOICES)}")
    device_type = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "liger":
        if device_type != "cuda":
            raise LlavaLnError(f"--kernels liger needs a CUDA device (this run is on {device_type}); "
                               "use --kernels torch or auto")
        liger.require_liger()
        return "liger", "requested"
    if choice != "auto":
        return choice, "requested"
    if device_type != "cuda":
        return "torch", f"auto: liger needs CUDA, this run is on {device_type}"
    usable, reason = liger.liger_status()
    return ("liger", "auto: CUDA and liger-kernel available") if usable else ("torch", f"auto: {reason}")


@dataclass(kw_only=True)
class KernelReport:
    """What apply_kernels did: for the log and the run's config."""

    requested: str
    backend: str
    reason: str
    replaced: dict = field(default_factory=dict)  # class name -> {implementation: count}
    untouched: dict = field(default_factory=dict)  # class name -> why it was left as it is

    def as_dict(self) -> dict:
        return {"requested": self.requested, "backend": self.backend, "reason": self.reason,
                "replaced": self.replaced, "untouched": self.untouched}

    def summary(self) -> str:
        done = ", ".join(f"{cls} x{n} -> {impl}" for cls, impls in self.replaced.items() for impl, n in impls.items())
        left = ", ".join(f"{cls} ({why})" for cls, why in self.untouched.items())
        return (f"kernels: {self.backend} (requested {self.requested}; {self.reason})"
                + (f"; replaced {done}" if done else "") + (f"; untouched {left}" if left else ""))


def _llm_root(model):
    """The language model of a composed Llava model, or the model itself (a bare transformers LM)."""
    try:
        return language_model_of(model)
    except AttributeError:
        return unwrap(model)


def _norm_forward(spec, use_liger: bool):
    impl = liger.norm if use_liger else lean_norm

    def forward(self, hidden_states):
        return impl(hidden_states, self.weight, getattr(self, "bias", None), eps=getattr(self, spec.eps_attribute),
                    style=spec.style)

    return forward


def _gated_forward(spec, kind: str, use_liger: bool):
    gate_name, up_name, down_name = spec.projections
    impl = liger.gated_activation if use_liger else gated_activation

    def forward(self, x):
        gate = getattr(self, gate_name)(x)
        return getattr(self, down_name)(impl(gate, getattr(self, up_name)(x), kind))

    return forward


def _plain_forward(spec, kind: str):
    in_name, out_name = spec.projections

    def forward(self, hidden_states):
        return getattr(self, out_name)(activation(getattr(self, in_name)(hidden_states), kind))

    return forward


def _swap(module, forward, label: str) -> None:
    module.forward = types.MethodType(forward, module)  # bound per instance, so deepcopy rebinds it
    setattr(module, _MARK, label)


def _replacement_forward(module, backend: str):
    """(forward, label) for a module this package replaces, or (None, why not) / (None, None) if unrelated."""
    spec = norm_spec(module)
    if spec is not None:
        use_liger = backend == "liger" and liger.covers_norm(spec.style, module.weight, getattr(module, "bias", None))
        return _norm_forward(spec, use_liger), f"{'liger' if use_liger else 'torch'}:norm({spec.style})"
    spec = MLPS.get(class_key(module))
    if spec is not None:
        act = getattr(module, spec.activation_attribute)
        kind = activation_kind(act)
        if kind is None:
            return None, f"activation {type(act).__name__} not covered"
        if not spec.gated:
            return _plain_forward(spec, kind), f"torch:activation({kind})"
        use_liger = backend == "liger" and liger.covers_gated(kind)
        return _gated_forward(spec, kind, use_liger), f"{'liger' if use_liger else 'torch'}:gated({kind})"
    if looks_like_norm(module):
        return None, "unknown norm class"
    if looks_like_mlp(module):
        return None, "unknown MLP class"
    return None, None


def kernel_backend_of(model) -> str:
    """The backend apply_kernels swapped into `model` ("torch" or "liger"), or "none".

    The training loss reads it (training.strategy.TrainingModule), so the fused head + loss runs
    exactly when the lean modules do, whoever applied them.
    """
    return getattr(_llm_root(model), _BACKEND_MARK, "none")


def remove_kernels(model) -> int:
    """Give every swapped module back its class's forward; returns how many were restored."""
    restored = 0
    root = _llm_root(model)
    if hasattr(root, _BACKEND_MARK):
        delattr(root, _BACKEND_MARK)
    for module in root.modules():
        if hasattr(module, _MARK):
            del module.forward
            delattr(module, _MARK)
            restored += 1
    return restored


def apply_kernels(model, choice: str = "auto", device=None) -> KernelReport:
    """Swap lean kernels into the LLM of `model` (see the module docstring); returns what was done."""
    backend, reason = resolve_kernel_backend(choice, device)
    report = KernelReport(requested=choice, backend=backend, reason=reason)
    if backend == "none":
        remove_kernels(model)
        logger.info(report.summary())
        return report
    remove_kernels(model)  # applying twice replaces, never stacks
    replaced = defaultdict(lambda: defaultdict(int))
    for module in _llm_root(model).modules():
        forward, label = _replacement_forward(module, backend)
        if forward is not None:
            _swap(module, forward, label)
            replaced[type(module).__name__][label] += 1
        elif label is not None:
            report.untouched[type(module).__name__] = label
    report.replaced = {cls: dict(impls) for cls, impls in replaced.items()}
    setattr(_llm_root(model), _BACKEND_MARK, backend)
    logger.info(report.summary())
    return report
