"""DeepSpeed ZeRO-1/2/3 strategy on top of deepspeed.initialize, and the filling of its JSON config.

Without an `optimizer` block our torch AdamW (with the per-group learning rates) is handed to
DeepSpeed; with one, DeepSpeed builds its optimizer from our parameter groups. DeepSpeed keeps the
module in bf16/fp16 and the fp32 masters and Adam moments partitioned in its ZeRO optimizer;
DeepSpeed's public tensor-fragment API (deepspeed.utils.safe_get_full_* / safe_set_full_*) reads
and writes them per parameter, which is what makes our checkpoints name-keyed, trainable-only and
independent of the number of ranks. The gradient-accumulation boundary is set explicitly each
micro-step so the loop, not DeepSpeed's counter, decides.

The config's "auto" values come from the flags, and what would silently break is refused:
  * no `gradient_clipping` key: DeepSpeed then never clips -> filled from --max_grad_norm;
  * a value that disagrees with a flag (batch size, clipping, precision) -> error naming both;
  * a `scheduler` block: it would overwrite every group's learning rate with one value,
    losing --mm_projector_lr / --norm_lr -> error (the schedule comes from the flags);
  * an `optimizer` block: allowed (ZeRO-Offload wants DeepSpeed's CPU Adam); its "auto"
    params come from the flags and our per-group rates are passed as parameter groups, which
    DeepSpeed's optimizers keep (a group's own "lr" wins over the block's default).
"""
import copy
import math
from typing import Protocol

import torch
from torch import nn

from llava_ln.core.distributed import DistContext
from llava_ln.core.errors import LlavaLnError
from llava_ln.training.args import TrainingArguments
from llava_ln.training.memory.policy import Precision
from llava_ln.training.strategy import StepOutcome, Strategy, TrainingModule, group_norm, make_adamw
from llava_ln.training.zero.config_types import check_zero_config_types, load_zero_config


def _is_partitioned(param) -> bool:
    return hasattr(param, "ds_id")


class DeepSpeedStrategy(Strategy):
    """DeepSpeed ZeRO-1/2/3 behind the Strategy interface (see the module docstring)."""

    def __init__(self, args: TrainingArguments, context: DistContext, precision: Precision, *, hidden_size: int):
        """hidden_size: the LLM's, which sizes the config's "auto" communication buckets."""
        super().__init__(args, context, precision)
        flags = _EffectivePrecision(args, precision)
        self.config = fill_zero_config(load_zero_config(args.deepspeed), flags, world_size=context.world_size,
                                       hidden_size=hidden_size, path=f"--deepspeed {args.deepspeed}")

    @property
    def zero_stage(self) -> int:
        return self.config["zero_optimization"]["stage"]

    @property
    def deepspeed_config(self) -> dict | None:
        return self.config

    def setup(self, model: nn.Module, param_groups: list[dict]) -> None:
        import deepspeed

        self.module = TrainingModule(model, reduction=self.loss_reduction)
        self.named_groups = [(g.get("name", str(i)), list(g["params"])) for i, g in enumerate(param_groups)]
        if "optimizer" in self.config:
            client = None
        else:
            # fp32 masters live in ZeRO's partitions; the client optimizer only defines the update rule.
            client = make_adamw(param_groups, self.args, self.device)
        from pydantic import ValidationError  # DeepSpeed validates its config with pydantic

        try:
            self.engine, self.optimizer, _, _ = deepspeed.initialize(
                model=self.module, optimizer=client, model_parameters=param_groups if client is None else None,
                config=self.config,
            )
        except ValidationError as err:
            first = err.errors()[0] if err.errors() else {}
            field_name = ".".join(str(part) for part in first.get("loc", ())) or "?"
            raise LlavaLnError(f"--deepspeed {self.args.deepspeed}: DeepSpeed rejects field {field_name} "
                               f"({first.get('msg', err)})") from None
        self.engine.train()
        self._state_views_linked = False

    def forward_backward(self, batch: dict, *, last_micro_step: bool, loss_weight: float | None = None) -> torch.Tensor:
        loss_weight = self.default_loss_weight(loss_weight)
        self.engine.set_gradient_accumulation_boundary(last_micro_step)
        loss = self.engine(batch)
        if loss_weight is None:
            self.engine.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps itself
        else:
            # scale_wrt_gas=False: no division by the accumulation steps (the weight already holds all of it; a loss
            # that goes through engine.backward is not divided again by the engine's output hook). Under fp16 the
            # engine multiplies the weighted loss by its loss scale and divides the gradients by it before clipping;
            # ZeRO's reduction averages over the data-parallel ranks, as forward_backward's contract assumes.
            self.engine.backward(loss * loss_weight, scale_wrt_gas=False)
        if not last_micro_step:
            self.engine.step()  # only advances DeepSpeed's micro-step bookkeeping off the boundary
        return loss.detach()

    def optimizer_step(self, *, skip: bool = False) -> StepOutcome:
        # The gradients live inside the engine, so `skip` cannot drop them before engine.step(); DeepSpeed's ZeRO
        # optimizers drop a step whose global gradient norm is not finite themselves (which a non-finite loss
        # gives), and was_step_applied() says so. An update applied with a non-finite norm is reported.
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        value = float(norm) if norm is not None else float("nan")
        applied = bool(self.engine.was_step_applied())
        return StepOutcome(grad_norm=value, applied=applied,
                           dropped_nonfinite=not applied and not self.precision.fp16,  # fp16: loss-scale overflow
                           applied_nonfinite=applied and norm is not None and not math.isfinite(value))

    def grad_group_norms(self) -> dict[str, float]:
        # ZeRO partitions (and under stage 3 also flattens) gradients; safe_get_full_grad assembles each
        # parameter's whole fp32 gradient (collective), so this is only done when asked for.
        from deepspeed.utils import safe_get_full_grad

        scale = float(getattr(self.optimizer, "loss_scale", 1.0) or 1.0) if self.precision.fp16 else 1.0
        return {name: group_norm(safe_get_full_grad(p) for p in params) / scale for name, params in self.named_groups}

    def scheduler_optimizer(self) -> torch.optim.Optimizer:
        # ZeRO wraps the torch optimizer; the wrapped one owns the param_groups that step() reads.
        return getattr(self.optimizer, "optimizer", self.optimizer)

    # --- full values by parameter (collective) ---
    def get_master(self, param: nn.Parameter) -> torch.Tensor:
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(param).detach().float().cpu()

    def _link_optimizer_state_views(self) -> None:
        """Work around DeepSpeed 0.19 (ZeRO-1/2): it links each parameter's optimizer-state views right
        after the first group's step, when the other groups' states do not exist yet, and never again,
        so the tensor-fragment API fails for every group but the first. Link all groups once every
        state exists (idempotent; the state tensors are updated in place afterwards)."""
        zero = self.optimizer
        if self._state_views_linked or not hasattr(zero, "single_partition_of_fp32_groups"):
            return
        from deepspeed.utils import lazy_init_hp_params_optimizer_state

        inner = self.scheduler_optimizer()
        for lp_params, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
            if flat not in inner.state:
                return  # not stepped yet; callers only read or write state after a step
        for lp_params, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
            lazy_init_hp_params_optimizer_state(lp_params, flat, inner.state)
        self._state_views_linked = True

    def get_optimizer_state(self, param: nn.Parameter, key: str) -> torch.Tensor:
        from deepspeed.utils import safe_get_full_optimizer_state

        self._link_optimizer_state_views()
        return safe_get_full_optimizer_state(param, key).detach().float().cpu()

    def set_master(self, param: nn.Parameter, value: torch.Tensor) -> None:
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(param, value.to(device=self.device, dtype=torch.float32))
        self._set_module_value(param, value)

    def set_optimizer_state(self, param: nn.Parameter, key: str, value: torch.Tensor) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        self._link_optimizer_state_views()
        safe_set_full_optimizer_state(param, value.to(device=self.device, dtype=torch.float32), key)

    def _set_module_value(self, param: nn.Parameter, value: torch.Tensor) -> None:
        """The working (bf16/fp32) copy the forward reads; under ZeRO-3 gathered, set on rank 0, re-partitioned."""
        import deepspeed

        with torch.no_grad():
            if not _is_partitioned(param):
                param.copy_(value.to(device=param.device, dtype=param.dtype))
                return
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if self.context.is_main:
                    param.copy_(value.to(device=param.device, dtype=param.dtype))

    def loss_scaler_state(self) -> dict | None:
        # [IMPORTANT] Deliberate approximation: DeepSpeed's fp16 loss scaler is not saved, so an fp16 run under
        # DeepSpeed restarts from the config's initial loss scale on resume and its first steps after a resume may
        # be dropped as overflows where the uninterrupted run's were not. bf16 and fp32 (no scaler) resume exactly.
        return None

    def load_loss_scaler_state(self, state: dict | None) -> None:
        return None


class ZeroConfigFlags(Protocol):
    """The flags fill_zero_config reads (TrainingArguments has them; a test may pass any object with them)."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    max_grad_norm: float
    bf16: bool
    fp16: bool
    learning_rate: float
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    weight_decay: float


class _EffectivePrecision:
    """The flags as the config filler should see them: bf16/fp16 as actually used on this device."""

    def __init__(self, args: TrainingArguments, precision: Precision):
        self._args = args
        self.bf16 = precision.bf16
        self.fp16 = precision.fp16

    def __getattr__(self, name):
        return getattr(self._args, name)


AUTO = "auto"


def _fill(section: dict, key: str, value: int | float | bool | list[float], *, source: str, where: str) -> None:
    """Set section[key] to value when absent or "auto"; a different explicit value is an error."""
    current = section.get(key, AUTO)
    if current == AUTO:
        section[key] = value
    elif current != value and not (isinstance(value, float) and isinstance(current, (int, float))
                                   and abs(current - value) <= 1e-12 * max(1.0, abs(value))):
        raise LlavaLnError(f"{where}: {key} is {current!r} but {source} gives {value!r}; set it to \"auto\"")


def fill_zero_config(config: dict, args: ZeroConfigFlags, *, world_size: int, hidden_size: int,
                     path: str = "--deepspeed") -> dict:
    """A copy of config with every "auto" resolved from the TrainingArguments."""
    check_zero_config_types(config, path)
    config = copy.deepcopy(config)
    micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    _fill(config, "train_micro_batch_size_per_gpu", micro, source="--per_device_train_batch_size", where=path)
    _fill(config, "gradient_accumulation_steps", accumulation, source="--gradient_accumulation_steps", where=path)
    _fill(config, "train_batch_size", micro * accumulation * world_size,
          source="per-device batch x accumulation x world size", where=path)
    _fill(config, "gradient_clipping", float(args.max_grad_norm), source="--max_grad_norm", where=path)
    for name, flag in (("bf16", args.bf16), ("fp16", args.fp16)):
        section = config.setdefault(name, {})
        _fill(section, "enabled", bool(flag), source=f"--{name}", where=f"{path} [{name}]")
    zero = config.setdefault("zero_optimization", {})
    _fill_bucket_sizes(zero, hidden_size)
    optimizer = config.get("optimizer")
    if optimizer is not None:
        params = optimizer.setdefault("params", {})
        where = f"{path} [optimizer.params]"
        _fill(params, "lr", float(args.learning_rate), source="--learning_rate", where=where)
        _fill(params, "betas", [float(args.adam_beta1), float(args.adam_beta2)], source="--adam_beta1/2", where=where)
        _fill(params, "eps", float(args.adam_epsilon), source="--adam_epsilon", where=where)
        _fill(params, "weight_decay", float(args.weight_decay), source="--weight_decay", where=where)
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
        # Gathered parameters ZeRO-3 may hold at once, prefetched ones included, and keeps for a reuse: about
        # one decoder block (12 h^2), at most LLaVA's 1e9. Its fixed 1e9 would keep a model under 1B parameters
        # whole on every rank through the step; one block still lets the prefetcher (whose bucket is 0.9 h^2)
        # run ahead of the compute.
        "stage3_max_live_parameters": min(10**9, 12 * hidden_size * hidden_size),
        "stage3_max_reuse_distance": min(10**9, 12 * hidden_size * hidden_size),
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
