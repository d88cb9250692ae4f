"""What the training loop needs from a distribution strategy, and the plain PyTorch one.

A strategy owns the wrapped model and the optimizer: it runs a micro-step (forward +
backward), an optimizer step (clip, update, zero), and reads or writes the full fp32
master value and optimizer moments of any trainable parameter by name. The loop and the
checkpoint code speak only this interface, so plain PyTorch (one process or DDP, here) and
DeepSpeed ZeRO-1/2/3 (zero/strategy.py) share one loop and one world-size-independent
checkpoint format.

TorchStrategy: frozen weights stay in the compute dtype and trainable ones in fp32
(memory.make_trainable_fp32); autocast runs the matmuls in bf16/fp16; fp16 adds a GradScaler.
Clipping is torch.nn.utils.clip_grad_norm_ over the trainable parameters (the returned norm is
the pre-clip one, as DeepSpeed reports it). AdamW (fused on CUDA) keeps each parameter group's
own "lr" and "weight_decay", so --mm_projector_lr and --norm_lr survive any wrapper.
"""
import contextlib
import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.kernels import kernel_backend_of, multimodal_supervised_loss
from llava_ln.model.forward import multimodal_forward
from llava_ln.training.memory.policy import make_trainable_fp32
from llava_ln.training.optim import clip_grad_norm, make_lean_adamw, uses_lean_optimizer

OPTIMIZER_STATE_KEYS = ("exp_avg", "exp_avg_sq")


class TrainingModule(nn.Module):
    """The whole multimodal forward as one module, so DDP's and ZeRO's hooks see every part run.

    The loss is the usual mean next-token cross-entropy over supervised tokens, but the LM head
    runs only at positions whose next token is supervised in some sample of the batch (image
    and prompt positions never are): the full [batch, length, vocab] fp32 logits that the
    model's own loss would build are the largest single activation of a LLaVA step. When lean
    kernels are applied to the model (llava_ln.kernels.apply_kernels, --kernels), the head and the
    loss run fused and chunked over exactly the supervised rows (kernels.loss): no [rows, vocab]
    fp32 logits at all.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        backend = kernel_backend_of(self.model)
        if backend != "none":
            return multimodal_supervised_loss(self.model, batch, backend)
        labels = batch["labels"]
        targets = labels[:, 1:]
        # Positions t whose next token is supervised anywhere in the batch (same for every row:
        # transformers' logits_to_keep accepts a 1-D position tensor in every 5.x release).
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = multimodal_forward(self.model, **inputs, logits_to_keep=keep).logits
        if keep.numel() == 0:  # no supervised token (the dataset never yields one): a zero loss in the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten().to(logits.device),
                               ignore_index=IGNORE_INDEX)


class Strategy(ABC):
    """Interface (see the module docstring). Collective methods must be called on every rank."""

    device = None
    optimizer = None  # the object whose param_groups carry the learning rates actually used

    @abstractmethod
    def setup(self, model, param_groups: list[dict]) -> None:
        """Move/wrap the model and build the optimizer over param_groups."""

    @abstractmethod
    def forward_backward(self, batch: dict, last_micro_step: bool, loss_scale: float = 1.0):
        """One micro-step; returns the (unscaled, detached) loss of this rank's micro-batch."""

    # Set by optimizer_step: whether the update happened, and whether the strategy dropped it (or could not
    # drop it) because the gradient norm was not finite (training.guards.step_guard reads them).
    step_applied = True
    dropped_nonfinite = False
    applied_nonfinite = False

    @abstractmethod
    def optimizer_step(self, skip: bool = False) -> float:
        """Clip, update, zero the gradients; returns the global gradient norm before clipping.

        skip: drop this update (a non-finite loss on some rank); a non-finite gradient norm drops it too.
        """

    @abstractmethod
    def grad_group_norms(self) -> dict:
        """{optimizer group name: L2 norm of its gradient} before clipping (unscaled): call after a step's
        last backward and before optimizer_step (collective). Only --log_grad_stats calls it."""

    @abstractmethod
    def scheduler_optimizer(self):
        """The torch optimizer an LR scheduler should drive."""

    @abstractmethod
    def get_master(self, param):
        """Full fp32 master value of a trainable parameter, on CPU (collective)."""

    @abstractmethod
    def get_optimizer_state(self, param, key: str):
        """Full fp32 optimizer moment `key` of a trainable parameter, on CPU (collective)."""

    @abstractmethod
    def set_master(self, param, value) -> None:
        """Set a trainable parameter's master and working copies from a full fp32 value (collective)."""

    @abstractmethod
    def set_optimizer_state(self, param, key: str, value) -> None:
        """Set a trainable parameter's optimizer moment `key` from its full value (collective)."""

    def set_optimizer_step(self, step: int) -> None:
        """Set the optimizer's own step counter (Adam's bias correction) on every state."""
        for group in self.scheduler_optimizer().param_groups:
            if "step" in group:
                group["step"] = step
        for state in self.scheduler_optimizer().state.values():
            if "step" in state:
                if hasattr(state["step"], "fill_"):
                    state["step"].fill_(step)
                else:
                    state["step"] = step

    def materialise_optimizer_state(self, batch: dict) -> None:
        """Make the optimizer create its (lazy) state without changing any weight: one step at lr 0
        on a zero-loss micro-batch. Resume then overwrites that state with the saved one."""
        optimizer = self.scheduler_optimizer()
        if len(optimizer.state):
            return
        saved = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = 0.0
        self.forward_backward(batch, last_micro_step=True, loss_scale=0.0)
        self.optimizer_step()
        for group, lr in zip(optimizer.param_groups, saved):
            group["lr"] = lr


def group_norm(grads) -> float:
    """L2 norm of several gradient tensors together (None entries are parameters without a gradient)."""
    squares = [torch.linalg.vector_norm(g.detach().float()) ** 2 for g in grads if g is not None]
    return math.sqrt(float(sum(squares))) if squares else 0.0


def make_adamw(param_groups: list[dict], args, device) -> torch.optim.Optimizer:
    if uses_lean_optimizer(args):  # --optim_state_dtype bf16 / --sparse_embedding_grad (optim.py)
        return make_lean_adamw(param_groups, args)
    return torch.optim.AdamW(
        param_groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
        fused=device.type == "cuda",
    )


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
        self.named_groups = [(g.get("name", str(i)), list(g["params"])) for i, g in enumerate(param_groups)]
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

    def optimizer_step(self, skip: bool = False) -> float:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else math.inf
        grad_norm = float(clip_grad_norm(self.trainable, max_norm))
        # Under fp16 the scaler drops an overflowing step itself (routine); otherwise a non-finite norm is ours to drop.
        self.dropped_nonfinite = not self.scaler and not math.isfinite(grad_norm)
        self.step_applied = not (skip or self.dropped_nonfinite)
        if self.scaler:
            scale = self.scaler.get_scale()
            if self.step_applied:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step_applied = self.step_applied and self.scaler.get_scale() >= scale
        elif self.step_applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def grad_group_norms(self) -> dict:
        scale = float(self.scaler.get_scale()) if self.scaler else 1.0  # fp16 grads are still scaled here
        return {name: group_norm(p.grad for p in params) / scale for name, params in self.named_groups}

    def scheduler_optimizer(self):
        return self.optimizer

    def get_master(self, param):
        return param.detach().float().cpu()

    def get_optimizer_state(self, param, key: str):
        return self.optimizer.state[param][key].detach().float().cpu()

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
