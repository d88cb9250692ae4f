"""Plain PyTorch strategy: one process, or DistributedDataParallel under torchrun.

Frozen weights stay in the compute dtype and trainable ones in fp32 (precision.py);
autocast runs the matmuls in bf16/fp16; fp16 adds a GradScaler. Clipping is
torch.nn.utils.clip_grad_norm_ over the trainable parameters (the returned norm is the
pre-clip one, as DeepSpeed reports it). AdamW is fused on CUDA.
"""
import contextlib
import math

import torch
from torch.nn.parallel import DistributedDataParallel

from llava_ln.training.optimizer import make_adamw
from llava_ln.training.precision import make_trainable_fp32
from llava_ln.training.strategy import Strategy, TrainingModule


class TorchStrategy(Strategy):
    def __init__(self, args, context, precision):
        self.args = args
        self.context = context
        self.precision = precision
        self.device = context.device

    def setup(self, model, param_groups: list[dict]) -> None:
        make_trainable_fp32(model)
        model.to(self.device)
        self.module = TrainingModule(model)
        self.wrapped = self.module
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.module, device_ids=device_ids)
        self.optimizer = make_adamw(param_groups, self.args, self.device)
        self.trainable = [p for group in param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.fp16 else None

    def _autocast(self):
        if not self.precision.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.compute_dtype)

    def forward_backward(self, batch: dict, last_micro_step: bool, loss_scale: float = 1.0):
        no_sync = self.context.distributed and not last_micro_step
        with self.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            with self._autocast():
                loss = self.wrapped(batch)
            scaled = loss * (loss_scale / self.args.gradient_accumulation_steps)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def optimizer_step(self) -> float:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def scheduler_optimizer(self):
        return self.optimizer

    def get_master(self, param):
        return param.detach().float().cpu()

    def get_optimizer_state(self, param, key: str):
        return self.optimizer.state[param][key].detach().float().cpu()

    def get_frozen_value(self, param):
        return param.detach().cpu()

    def set_master(self, param, value) -> None:
        with torch.no_grad():
            param.copy_(value.to(device=param.device, dtype=param.dtype))

    def set_optimizer_state(self, param, key: str, value) -> None:
        state = self.optimizer.state[param][key]
        state.copy_(value.to(device=state.device, dtype=state.dtype))

    def loss_scaler_state(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler else None

    def load_loss_scaler_state(self, state: dict | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
