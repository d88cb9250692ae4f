"""Fill a DeepSpeed JSON config's "auto" values from the flags, and refuse what would silently break.

What can go wrong with a hand-written DeepSpeed config, and what this module does:
  * no `gradient_clipping` key: DeepSpeed then never clips -> filled from --max_grad_norm;
  * a value that disagrees with a flag (batch size, clipping, precision) -> error naming both;
  * a `scheduler` block: it would overwrite every group's learning rate with one value,
    losing --mm_projector_lr / --norm_lr -> error (the schedule comes from the flags);
  * an `optimizer` block: allowed (ZeRO-Offload wants DeepSpeed's CPU Adam); its "auto"
    params come from the flags and our per-group rates are passed as parameter groups, which
    DeepSpeed's optimizers keep (a group's own "lr" wins over the block's default).
"""
import copy
import json
import os

from llava_ln.core.errors import LlavaLnError

AUTO = "auto"


def load_zero_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise LlavaLnError(f"--deepspeed {path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise LlavaLnError(f"--deepspeed {path}: not valid JSON ({err})") from None


def _fill(section: dict, key: str, value, source: str, where: str) -> None:
    """Set section[key] to value when absent or "auto"; a different explicit value is an error."""
    current = section.get(key, AUTO)
    if current == AUTO:
        section[key] = value
    elif current != value and not (isinstance(value, float) and isinstance(current, (int, float))
                                   and abs(current - value) <= 1e-12 * max(1.0, abs(value))):
        raise LlavaLnError(f"{where}: {key} is {current!r} but {source} gives {value!r}; set it to \"auto\"")


def fill_zero_config(config: dict, args, world_size: int, hidden_size: int, path: str = "--deepspeed") -> dict:
    """A copy of config with every "auto" resolved from the TrainingArguments."""
    config = copy.deepcopy(config)
    if "scheduler" in config:
        raise LlavaLnError(f"{path}: remove the `scheduler` block; the schedule comes from --lr_scheduler_type and "
                           "--warmup_ratio so that per-group learning rates survive")
    micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    _fill(config, "train_micro_batch_size_per_gpu", micro, "--per_device_train_batch_size", path)
    _fill(config, "gradient_accumulation_steps", accumulation, "--gradient_accumulation_steps", path)
    _fill(config, "train_batch_size", micro * accumulation * world_size,
          "per-device batch x accumulation x world size", path)
    _fill(config, "gradient_clipping", float(args.max_grad_norm), "--max_grad_norm", path)
    for name, flag in (("bf16", args.bf16), ("fp16", args.fp16)):
        section = config.setdefault(name, {})
        _fill(section, "enabled", bool(flag), f"--{name}", f"{path} [{name}]")
    zero = config.setdefault("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage not in (1, 2, 3):
        raise LlavaLnError(f"{path}: zero_optimization.stage {stage!r}: use 1, 2 or 3 (or drop --deepspeed for "
                           "plain PyTorch)")
    _fill_bucket_sizes(zero, hidden_size)
    optimizer = config.get("optimizer")
    if optimizer is not None:
        params = optimizer.setdefault("params", {})
        where = f"{path} [optimizer.params]"
        _fill(params, "lr", float(args.learning_rate), "--learning_rate", where)
        _fill(params, "betas", [float(args.adam_beta1), float(args.adam_beta2)], "--adam_beta1/2", where)
        _fill(params, "eps", float(args.adam_epsilon), "--adam_epsilon", where)
        _fill(params, "weight_decay", float(args.weight_decay), "--weight_decay", where)
    else:
        # Our own torch AdamW carries the parameter groups; DeepSpeed must accept it as is.
        config["zero_allow_untested_optimizer"] = True
        if _offloads_optimizer(zero):
            config.setdefault("zero_force_ds_cpu_optimizer", False)
    config.setdefault("steps_per_print", 10**9)  # progress is ours; keep DeepSpeed's log quiet
    config.setdefault("wall_clock_breakdown", False)
    _reject_leftover_auto(config, path)
    return config


def _fill_bucket_sizes(zero: dict, hidden_size: int) -> None:
    # Sizes proportional to the hidden size squared, as DeepSpeed's own guidance suggests.
    defaults = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in defaults.items():
        if zero.get(key) == AUTO:
            zero[key] = value


def _offloads_optimizer(zero: dict) -> bool:
    device = (zero.get("offload_optimizer") or {}).get("device", "none")
    return device not in (None, "none")


def _reject_leftover_auto(node, path: str, trail: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _reject_leftover_auto(value, path, f"{trail}.{key}" if trail else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _reject_leftover_auto(value, path, f"{trail}[{index}]")
    elif node == AUTO:
        raise LlavaLnError(f"{path}: {trail} is \"auto\" but llava-ln has no flag to fill it from; give a value")
