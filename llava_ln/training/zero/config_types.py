"""What a DeepSpeed config's fields may hold, checked when the run starts, before any model is built.

A config is written by hand, so `"train_micro_batch_size_per_gpu": "8"`, `"stage": "3"`,
`"overlap_comm": "true"`, `"bf16": true` (for `{"enabled": true}`), a batch size of 0, a negative
bucket size, `"eps": 0` or an optimizer DeepSpeed does not know happen. Unchecked, such a value
either fails deep inside DeepSpeed with a traceback once the model has loaded, is silently coerced,
or (Python's `True == 1`) passes as a batch size. Here every field llava-ln fills, and every ZeRO
field it knows, must have its JSON type and a value in its domain: a positive integer for sizes and
counts (at least 1; integral floats such as 1e9 count as integers, as LLaVA's own configs write them), a finite
number at least 0 for rates and clipping, true/false for switches, an object for a section, a known
offload device, betas in [0, 1), or "auto" where llava-ln fills the value. The optimizer `type` must
name one of DeepSpeed's optimizers or a torch.optim class (what DeepSpeed accepts), and the blocks
llava-ln cannot honour (a `scheduler`, `max_grad_norm` among the optimizer's params) are refused
here too. The first wrong field is one line naming the file, the field and what it must be. Fields
not listed are left to DeepSpeed.
"""
import math
import os

from llava_ln.core.bounded_json import read_json
from llava_ln.core.errors import LlavaLnError

AUTO = "auto"


def _integer(value) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, float) and value.is_integer())


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


_KINDS = {
    "an integer >= 1": lambda v: _integer(v) and v >= 1,
    "an integer >= 0": lambda v: _integer(v) and v >= 0,
    "an integer from 0 to 64": lambda v: _integer(v) and 0 <= v <= 64,
    "a finite number >= 0": lambda v: _number(v) and v >= 0,
    "a finite number > 0": lambda v: _number(v) and v > 0,
    "a number from 0 to 1": lambda v: _number(v) and 0 <= v <= 1,
    "true or false": lambda v: isinstance(v, bool),
    "one of \"cpu\", \"nvme\", \"none\"": lambda v: v in ("cpu", "nvme", "none"),
}

_TOP = {"train_micro_batch_size_per_gpu": "an integer >= 1", "gradient_accumulation_steps": "an integer >= 1",
        "train_batch_size": "an integer >= 1", "gradient_clipping": "a finite number >= 0",
        "steps_per_print": "an integer >= 1", "wall_clock_breakdown": "true or false",
        "zero_allow_untested_optimizer": "true or false", "zero_force_ds_cpu_optimizer": "true or false",
        "prescale_gradients": "true or false", "gradient_predivide_factor": "a finite number > 0"}
_PRECISION = {"enabled": "true or false", "loss_scale": "a finite number >= 0", "loss_scale_window": "an integer >= 1",
              "initial_scale_power": "an integer from 0 to 64", "hysteresis": "an integer >= 1",
              "min_loss_scale": "a finite number > 0"}
_ZERO = {"overlap_comm": "true or false", "contiguous_gradients": "true or false",
         "sub_group_size": "an integer >= 1", "reduce_bucket_size": "an integer >= 1",
         "allgather_bucket_size": "an integer >= 1", "allgather_partitions": "true or false",
         "reduce_scatter": "true or false", "round_robin_gradients": "true or false",
         "stage3_prefetch_bucket_size": "an integer >= 0", "stage3_param_persistence_threshold": "an integer >= 0",
         "stage3_max_live_parameters": "an integer >= 0", "stage3_max_reuse_distance": "an integer >= 0",
         "stage3_gather_16bit_weights_on_model_save": "true or false"}
_OFFLOAD = {"device": "one of \"cpu\", \"nvme\", \"none\"", "pin_memory": "true or false",
            "buffer_count": "an integer >= 1", "fast_init": "true or false", "ratio": "a number from 0 to 1"}
_OPTIMIZER_PARAMS = {"lr": "a finite number >= 0", "eps": "a finite number > 0", "weight_decay": "a finite number >= 0"}


def _valid_unquoted(value, kind: str) -> bool:
    """Whether a string value is what a field wants once its quotes go ("8" for an integer, "true" for a bool)."""
    if not isinstance(value, str) or len(value) > 40:
        return False
    unquoted = {"true": True, "false": False}.get(value)
    for parse in (int, float):
        if unquoted is None:
            try:
                unquoted = parse(value)
            except ValueError:
                pass
    return unquoted is not None and _KINDS[kind](unquoted)


def _check_fields(section: dict, kinds: dict, where: str) -> None:
    for key, kind in kinds.items():
        if key not in section or section[key] == AUTO:
            continue
        value = section[key]
        if not _KINDS[kind](value):
            hint = " (without quotes)" if _valid_unquoted(value, kind) else ""
            raise LlavaLnError(f"{where}: {key} is {value!r}; it must be {kind}{hint} or \"auto\"")


def _section(parent: dict, key: str, where: str) -> dict | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LlavaLnError(f"{where}: {key} is {value!r}; it must be an object ({{...}})")
    return value


def load_zero_config(path: str) -> dict:
    """The parsed --deepspeed file (bounded: core.bounded_json)."""
    if not os.path.isfile(path):
        raise LlavaLnError(f"--deepspeed {path}: no such file")
    return read_json(path, "--deepspeed")


def check_zero_config_file(path: str | None) -> None:
    """The whole check on the --deepspeed file, at start (no-op without one)."""
    if path:
        check_zero_config_types(load_zero_config(path), path)


def check_zero_config_types(config, path: str) -> None:
    """One line naming the first field of a DeepSpeed config whose type or value is wrong."""
    if not isinstance(config, dict):
        raise LlavaLnError(f"{path}: the config is a JSON {type(config).__name__}, not an object")
    _check_fields(config, _TOP, path)
    if "scheduler" in config:
        raise LlavaLnError(f"{path}: remove the `scheduler` block; the schedule comes from --lr_scheduler_type and "
                           "--warmup_ratio so that per-group learning rates survive")
    for name in ("bf16", "fp16"):
        section = _section(config, name, path)
        if section is not None:
            _check_fields(section, _PRECISION, f"{path} [{name}]")
    zero = _section(config, "zero_optimization", path) or {}
    stage = zero.get("stage", 0)
    if not _integer(stage) or stage not in (1, 2, 3):
        raise LlavaLnError(f"{path} [zero_optimization]: stage is {stage!r}; it must be 1, 2 or 3 (or drop "
                           "--deepspeed for plain PyTorch)")
    _check_fields(zero, _ZERO, f"{path} [zero_optimization]")
    for name in ("offload_optimizer", "offload_param"):
        section = _section(zero, name, f"{path} [zero_optimization]")
        if section is not None:
            _check_fields(section, _OFFLOAD, f"{path} [zero_optimization.{name}]")
    optimizer = _section(config, "optimizer", path)
    if optimizer is not None:
        _check_optimizer(optimizer, path)


def _check_optimizer(optimizer: dict, path: str) -> None:
    kind = optimizer.get("type")
    if not isinstance(kind, str) or not known_optimizer(kind):
        raise LlavaLnError(f"{path} [optimizer]: type {kind!r} is not an optimizer DeepSpeed can build (one of "
                           f"{', '.join(_deepspeed_optimizers())}, or a torch.optim class such as AdamW)")
    params = _section(optimizer, "params", f"{path} [optimizer]")
    if params is None:
        return
    if "max_grad_norm" in params:
        raise LlavaLnError(f"{path} [optimizer.params]: max_grad_norm is not an optimizer parameter; clipping comes "
                           "from --max_grad_norm (DeepSpeed's gradient_clipping)")
    _check_fields(params, _OPTIMIZER_PARAMS, f"{path} [optimizer.params]")
    betas = params.get("betas", AUTO)
    if betas != AUTO and not (isinstance(betas, list) and len(betas) == 2 and
                              all(_number(b) and 0 <= b < 1 for b in betas)):
        raise LlavaLnError(f"{path} [optimizer.params]: betas is {betas!r}; it must be [beta1, beta2], each in [0, 1), "
                           "or \"auto\"")


def _deepspeed_optimizers() -> list:
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    return list(DEEPSPEED_OPTIMIZERS)


def known_optimizer(name: str) -> bool:
    """What DeepSpeed's engine builds: its own optimizers (any case) or a torch.optim optimizer class by name."""
    import torch

    if name.lower() in _deepspeed_optimizers():
        return True
    candidate = getattr(torch.optim, name, None)
    return isinstance(candidate, type) and issubclass(candidate, torch.optim.Optimizer)
