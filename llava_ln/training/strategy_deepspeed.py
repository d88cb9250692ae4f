"""DeepSpeed ZeRO-1/2/3 strategy on top of deepspeed.initialize.

The config's "auto" values come from the flags (zero_config.py). Without an `optimizer`
block our torch AdamW (with the per-group learning rates) is handed to DeepSpeed; with
one, DeepSpeed builds its optimizer from our parameter groups. DeepSpeed keeps the module
in bf16/fp16 and the fp32 masters and Adam moments partitioned in its ZeRO optimizer;
DeepSpeed's public tensor-fragment API (deepspeed.utils.safe_get_full_* / safe_set_full_*)
reads and writes them per parameter, which is what makes our checkpoints name-keyed,
trainable-only and independent of the number of ranks. The gradient-accumulation
boundary is set explicitly each micro-step so the loop, not DeepSpeed's counter, decides.
"""
import torch

from llava_ln.training.optimizer import make_adamw
from llava_ln.training.strategy import Strategy, TrainingModule
from llava_ln.training.zero_config import fill_zero_config, load_zero_config


def _is_partitioned(param) -> bool:
    return hasattr(param, "ds_id")


class DeepSpeedStrategy(Strategy):
    def __init__(self, args, context, precision, hidden_size: int):
        self.args = args
        self.context = context
        self.precision = precision
        self.device = context.device
        flags = _EffectivePrecision(args, precision)
        self.config = fill_zero_config(load_zero_config(args.deepspeed), flags, context.world_size, hidden_size,
                                       path=f"--deepspeed {args.deepspeed}")

    @property
    def zero_stage(self) -> int:
        return self.config["zero_optimization"]["stage"]

    def setup(self, model, param_groups: list[dict]) -> None:
        import deepspeed

        self.module = TrainingModule(model)
        if "optimizer" in self.config:
            client = None
        else:
            # fp32 masters live in ZeRO's partitions; the client optimizer only defines the update rule.
            client = make_adamw(param_groups, self.args, self.device)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=self.module, optimizer=client, model_parameters=param_groups if client is None else None,
            config=self.config,
        )
        self.engine.train()
        self._state_views_linked = False

    def forward_backward(self, batch: dict, last_micro_step: bool, loss_scale: float = 1.0):
        self.engine.set_gradient_accumulation_boundary(last_micro_step)
        loss = self.engine(batch)
        self.engine.backward(loss * loss_scale if loss_scale != 1.0 else loss)
        if not last_micro_step:
            self.engine.step()  # only advances DeepSpeed's micro-step bookkeeping off the boundary
        return loss.detach()

    def optimizer_step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def scheduler_optimizer(self):
        # ZeRO wraps the torch optimizer; the wrapped one owns the param_groups that step() reads.
        return getattr(self.optimizer, "optimizer", self.optimizer)

    # --- full values by parameter (collective) ---
    def get_master(self, param):
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

    def get_optimizer_state(self, param, key: str):
        from deepspeed.utils import safe_get_full_optimizer_state

        self._link_optimizer_state_views()
        return safe_get_full_optimizer_state(param, key).detach().float().cpu()

    def get_frozen_value(self, param):
        import deepspeed

        if not _is_partitioned(param):
            return param.detach().cpu()
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            return param.detach().cpu().clone()

    def set_master(self, param, value) -> None:
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(param, value.to(device=self.device, dtype=torch.float32))
        self._set_module_value(param, value)

    def set_optimizer_state(self, param, key: str, value) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        self._link_optimizer_state_views()
        safe_set_full_optimizer_state(param, value.to(device=self.device, dtype=torch.float32), key)

    def _set_module_value(self, param, value) -> None:
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
        return None  # fp16 under DeepSpeed restarts from the config's initial loss scale on resume

    def load_loss_scaler_state(self, state: dict | None) -> None:
        return None


class _EffectivePrecision:
    """The flags as the config filler should see them: bf16/fp16 as actually used on this device."""

    def __init__(self, args, precision):
        self._args = args
        self.bf16 = precision.bf16
        self.fp16 = precision.fp16

    def __getattr__(self, name):
        return getattr(self._args, name)
