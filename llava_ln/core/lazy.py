"""Package attributes that import their module on first use, so importing a package costs nothing.

A package whose __init__ re-exports names from modules that import torch would make every module in it
(its flag dataclasses too) import torch. Instead its __init__ says where each name lives:

    __getattr__, __dir__ = lazy_exports(__name__, {"apply_kernels": "llava_ln.kernels.apply", ...})
"""
import importlib


def lazy_exports(package: str, exports: dict) -> tuple:
    """(__getattr__, __dir__) for a package: `exports` maps each re-exported name to its module."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
