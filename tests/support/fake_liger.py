"""A stand-in for the liger_kernel package, in plain torch, so llava-ln's liger plumbing runs on a CPU.

It provides what llava_ln.kernels.liger imports (liger_kernel.transformers.functional's liger_rms_norm,
liger_layer_norm, liger_swiglu, liger_geglu and liger_fused_linear_cross_entropy) with liger-kernel's
parameter names and defaults, so an adapter call that the real functions would reject raises TypeError
here too. Each computes what the liger kernel of that name computes, in eager torch, and every call is
recorded with its arguments bound to their names. What it cannot show is that liger's Triton kernels
compute those values: that needs a GPU and the real package.
"""
import importlib.machinery
import inspect
import sys
import types

import torch
import torch.nn.functional as F

PACKAGE = "liger_kernel"
FUNCTIONAL = "liger_kernel.transformers.functional"


def liger_rms_norm(X, W, eps, offset: float = 0.0, casting_mode: str = "llama", in_place: bool = True):
    x = X.float()
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if casting_mode == "gemma":  # everything in fp32, cast once at the end
        return (normed * (offset + W.float())).to(X.dtype)
    return (normed.to(X.dtype) * (offset + W)).to(X.dtype)  # "llama": normalise in fp32, scale in the input dtype


def liger_layer_norm(X, W, B, eps):
    return F.layer_norm(X, (X.shape[-1],), W, B, eps)


def liger_swiglu(a, b):
    return F.silu(a) * b


def liger_geglu(a, b):
    return F.gelu(a, approximate="tanh") * b


def liger_fused_linear_cross_entropy(input, weight, target, bias=None, ce_weight=None, ignore_index: int = -100,
                                     lse_square_scale: float = 0.0, label_smoothing: float = 0.0,
                                     reduction: str = "mean", softcap=None, return_z_loss: bool = False):
    logits = F.linear(input, weight, bias).float()
    return F.cross_entropy(logits, target, weight=ce_weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)


FUNCTIONS = (liger_rms_norm, liger_layer_norm, liger_swiglu, liger_geglu, liger_fused_linear_cross_entropy)


class FakeLiger:
    """The stand-in's modules and its call log: `calls` is [(function name, {parameter: value})], in call order."""

    def __init__(self, with_functional: bool = True):
        self.calls = []
        self.modules = {}
        for name in (PACKAGE, "liger_kernel.transformers", FUNCTIONAL):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=name != FUNCTIONAL)
            self.modules[name] = module
        self.modules[PACKAGE].transformers = self.modules["liger_kernel.transformers"]
        if with_functional:  # without it, `from liger_kernel.transformers import functional` fails as a broken install
            self.modules["liger_kernel.transformers"].functional = self.modules[FUNCTIONAL]
            for function in FUNCTIONS:
                setattr(self.modules[FUNCTIONAL], function.__name__, self._recorded(function))
        else:
            del self.modules[FUNCTIONAL]

    def _recorded(self, function):
        signature = inspect.signature(function)

        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)  # TypeError on an argument liger-kernel does not take
            bound.apply_defaults()
            self.calls.append((function.__name__, dict(bound.arguments)))
            return function(*args, **kwargs)

        return call

    def install(self, monkeypatch) -> "FakeLiger":
        """Put the stand-in in sys.modules for the test (monkeypatch undoes it)."""
        for name in (PACKAGE, "liger_kernel.transformers", FUNCTIONAL):
            if name in self.modules:
                monkeypatch.setitem(sys.modules, name, self.modules[name])
            else:
                monkeypatch.delitem(sys.modules, name, raising=False)
        return self

    def of(self, name: str) -> list[dict]:
        """The bound arguments of every call to `name`, in order."""
        return [arguments for called, arguments in self.calls if called == name]


def uninstall_liger(monkeypatch) -> None:
    """Make liger_kernel absent for the test even where it is installed: find_spec answers None, imports fail."""
    monkeypatch.setitem(sys.modules, PACKAGE, None)
