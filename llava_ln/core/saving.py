"""save_pretrained without importing DeepSpeed, for commands that never use it (merge, export, saving runs).

transformers' save_pretrained unwraps the model through accelerate, which imports DeepSpeed whenever it is
installed only to ask whether the model is a DeepSpeedEngine. A model saved here never is (callers hand over
the unwrapped module), and that import costs seconds and prints DeepSpeed's accelerator warning. So while
saving, accelerate is told DeepSpeed is absent; once DeepSpeed is imported anyway (a training run under
--deepspeed), nothing is changed.
"""
import contextlib
import sys


@contextlib.contextmanager
def _without_deepspeed_probe():
    try:
        import accelerate.utils.other as unwrapping
    except ImportError:  # without accelerate transformers unwraps by itself, importing nothing
        yield
        return
    if "deepspeed" in sys.modules or not hasattr(unwrapping, "is_deepspeed_available"):
        yield
        return
    original = unwrapping.is_deepspeed_available
    unwrapping.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        unwrapping.is_deepspeed_available = original


def save_pretrained(model, directory: str, **kwargs) -> None:
    """model.save_pretrained(directory, **kwargs), without the DeepSpeed import."""
    with _without_deepspeed_probe():
        model.save_pretrained(directory, **kwargs)
