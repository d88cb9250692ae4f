"""The JSON types of a DeepSpeed config's fields, checked before the config is filled or handed over.

A config is written by hand, so `"train_micro_batch_size_per_gpu": "8"`, `"stage": "3"`,
`"overlap_comm": "true"` or `"bf16": true` (for `{"enabled": true}`) happen. Unchecked, such a
value either fails deep inside DeepSpeed with a traceback, is silently coerced, or (Python's
`True == 1`) passes as a batch size. Here every field llava-ln fills, and every ZeRO field it knows,
must have its JSON type: a number where DeepSpeed wants a number (integral floats such as 1e9 count
as integers, as LLaVA's own configs write them), true/false where it wants a boolean, an object
for a section, or "auto" where llava-ln fills the value. The first wrong one is one line naming the
file, the field and what it must be. Fields not listed are left to DeepSpeed.
"""
from llava_ln.core.errors import LlavaLnError

AUTO = "auto"


def _integer(value) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, float) and value.is_integer())


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _boolean(value) -> bool:
    return isinstance(value, bool)


_KINDS = {"an integer": _integer, "a number": _number, "true or false": _boolean,
          "a string": lambda value: isinstance(value, str)}

_TOP = {"train_micro_batch_size_per_gpu": "an integer", "gradient_accumulation_steps": "an integer",
        "train_batch_size": "an integer", "gradient_clipping": "a number", "steps_per_print": "an integer",
        "wall_clock_breakdown": "true or false", "zero_allow_untested_optimizer": "true or false",
        "zero_force_ds_cpu_optimizer": "true or false", "prescale_gradients": "true or false",
        "gradient_predivide_factor": "a number"}
_PRECISION = {"enabled": "true or false", "loss_scale": "a number", "loss_scale_window": "an integer",
              "initial_scale_power": "an integer", "hysteresis": "an integer", "min_loss_scale": "a number"}
_ZERO = {"stage": "an integer", "overlap_comm": "true or false", "contiguous_gradients": "true or false",
         "sub_group_size": "an integer", "reduce_bucket_size": "an integer", "allgather_bucket_size": "an integer",
         "allgather_partitions": "true or false", "reduce_scatter": "true or false",
         "round_robin_gradients": "true or false", "stage3_prefetch_bucket_size": "an integer",
         "stage3_param_persistence_threshold": "an integer", "stage3_max_live_parameters": "an integer",
         "stage3_max_reuse_distance": "an integer", "stage3_gather_16bit_weights_on_model_save": "true or false"}
_OFFLOAD = {"device": "a string", "pin_memory": "true or false", "buffer_count": "an integer",
            "fast_init": "true or false", "ratio": "a number"}
_OPTIMIZER_PARAMS = {"lr": "a number", "eps": "a number", "weight_decay": "a number"}


def _check_fields(section: dict, kinds: dict, where: str) -> None:
    for key, kind in kinds.items():
        if key not in section or section[key] == AUTO:
            continue
        value = section[key]
        if not _KINDS[kind](value):
            hint = " (without quotes)" if isinstance(value, str) and kind != "a string" else ""
            raise LlavaLnError(f"{where}: {key} is {value!r}; it must be {kind}{hint} or \"auto\"")


def _section(parent: dict, key: str, where: str) -> dict | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LlavaLnError(f"{where}: {key} is {value!r}; it must be an object ({{...}})")
    return value


def check_zero_config_types(config, path: str) -> None:
    """One line naming the first field of a DeepSpeed config whose JSON type is wrong."""
    if not isinstance(config, dict):
        raise LlavaLnError(f"{path}: the config is a JSON {type(config).__name__}, not an object")
    _check_fields(config, _TOP, path)
    for name in ("bf16", "fp16"):
        section = _section(config, name, path)
        if section is not None:
            _check_fields(section, _PRECISION, f"{path} [{name}]")
    zero = _section(config, "zero_optimization", path)
    if zero is not None:
        _check_fields(zero, _ZERO, f"{path} [zero_optimization]")
        for name in ("offload_optimizer", "offload_param"):
            section = _section(zero, name, f"{path} [zero_optimization]")
            if section is not None:
                _check_fields(section, _OFFLOAD, f"{path} [zero_optimization.{name}]")
    optimizer = _section(config, "optimizer", path)
    if optimizer is not None:
        params = _section(optimizer, "params", f"{path} [optimizer]")
        if params is not None:
            _check_fields(params, _OPTIMIZER_PARAMS, f"{path} [optimizer.params]")
            betas = params.get("betas", AUTO)
            if betas != AUTO and not (isinstance(betas, list) and len(betas) == 2 and all(map(_number, betas))):
                raise LlavaLnError(f"{path} [optimizer.params]: betas is {betas!r}; it must be [beta1, beta2] or "
                                   "\"auto\"")
