"""What the training loop needs from a distribution strategy, and the plain PyTorch one.

A strategy owns the wrapped model and the optimizer: it runs a micro-step (forward +
backward), an optimizer step (clip, update, zero) that returns a StepOutcome, and reads or
writes the full fp32 master value and optimizer moments of any trainable parameter by name.
The Strategy base class declares all of it, so the loop, the checkpointer, reporting
and train.py speak only that interface, and plain PyTorch (one process or DDP, here) and
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
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.distributed import DistContext
from llava_ln.kernels import kernel_backend_of, multimodal_supervised_loss, supervised_targets
from llava_ln.model.forward import multimodal_forward
from llava_ln.training.args import TrainingArguments
from llava_ln.training.memory.policy import Precision, make_trainable_fp32
from llava_ln.training.optim import clip_grad_norm, make_lean_adamw, uses_lean_optimizer

OPTIMIZER_STATE_KEYS = ("exp_avg", "exp_avg_sq")


class TrainingModule(nn.Module):
    """The whole multimodal forward as one module, so DDP's and ZeRO's hooks see every part run.

    The loss is the next-token cross-entropy over supervised tokens, their mean (reduction "mean")
    or their sum ("sum": a token-weighted step weighs each micro-batch's sum by the step's token
    count, Strategy.loss_reduction), but the LM head runs only at positions whose next token is
    supervised in some sample of the batch (image and prompt positions never are): the full
    [batch, length, vocab] fp32 logits that the model's own loss would build are the largest single
    activation of a LLaVA step. When lean kernels are applied to the model
    (llava_ln.kernels.apply_kernels, --kernels), the head and the loss run fused and chunked over
    exactly the supervised rows (kernels.loss): no [rows, vocab] fp32 logits at all.
    """

    def __init__(self, model: nn.Module, reduction: str = "mean"):
        super().__init__()
        self.model = model
        self.reduction = reduction

    def forward(self, batch: dict) -> torch.Tensor:
        backend = kernel_backend_of(self.model)
        if backend != "none":
            return multimodal_supervised_loss(self.model, batch, backend=backend, reduction=self.reduction)
        targets, supervised = supervised_targets(batch["labels"])
        # Positions t whose next token is supervised anywhere in the batch (same for every row:
        # transformers' logits_to_keep accepts a 1-D position tensor in every 5.x release).
        keep = supervised.any(dim=0).nonzero().squeeze(1)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = multimodal_forward(self.model, **inputs, logits_to_keep=keep).logits
        if keep.numel() == 0:  # no supervised token (the dataset never yields one): a zero loss in the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten().to(logits.device),
                               ignore_index=IGNORE_INDEX, reduction=self.reduction)


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    """What one optimizer step did, as the strategy that took it saw it (Strategy.optimizer_step returns it).

    The step guard decides from it whether the run goes on (training.guards.step_guard), and the loop logs
    its grad_norm; nothing about a step is left behind in the strategy for others to read later.
    """

    grad_norm: float  # the global gradient norm before clipping (unscaled); NaN when the backend reports none
    applied: bool  # the optimizer updated the weights (False: skipped on request, dropped, or an fp16 overflow)
    dropped_nonfinite: bool = False  # the strategy dropped the update because the gradient norm was not finite
    applied_nonfinite: bool = False  # the update went in although the gradient norm was not finite

    @property
    def nonfinite_gradient(self) -> bool:
        """The gradient norm was not finite in a way the step guard must count (an fp16 overflow is not)."""
        return self.dropped_nonfinite or self.applied_nonfinite


class HoldsParamGroups(Protocol):
    """An optimizer, or a wrapper of one (DeepSpeed's ZeRO optimizers), that exposes its parameter groups."""

    param_groups: list[dict]


class Strategy(ABC):
    """Everything the loop, the checkpointer, reporting and train.py ask of a distribution strategy.

    Life cycle: construct, then setup(model, param_groups) once; every other method needs setup first.
    Methods marked collective must be called on every rank, in the same order.

    Attributes:
        args: the training flags.
        context: this process's rank, world size and device.
        precision: the precision actually used on this device.
        device: where batches go (context.device).
        optimizer: set by setup; whose param_groups hold the learning rates and hyper-parameters actually used
            (under ZeRO DeepSpeed's wrapper, whose groups are those of the optimizer it wraps).
    """

    optimizer: HoldsParamGroups

    def __init__(self, args: TrainingArguments, context: DistContext, precision: Precision):
        self.args = args
        self.context = context
        self.precision = precision
        self.device: torch.device = context.device

    @property
    def zero_stage(self) -> int:
        """The DeepSpeed ZeRO stage (1, 2 or 3), or 0 when DeepSpeed is not used."""
        return 0

    @property
    def loss_reduction(self) -> str:
        """How a micro-batch's token losses are reduced: "sum" under --loss_weighting token (the caller weighs
        it by world size / the step's supervised tokens), "mean" under llava."""
        return "sum" if self.args.loss_weighting == "token" else "mean"

    def default_loss_weight(self, loss_weight: float | None) -> float | None:
        """loss_weight as given; None is only meaningful for a mean loss (where the backend divides by the
        accumulation steps its own way)."""
        if loss_weight is None and self.loss_reduction == "sum":
            raise ValueError("forward_backward needs loss_weight under --loss_weighting token: the loss is the "
                             "micro-batch's token sum, weighed by world size / the step's supervised tokens")
        return loss_weight

    @property
    def deepspeed_config(self) -> dict | None:
        """The DeepSpeed JSON config with every "auto" filled from the flags (run_config.json records it), or None."""
        return None

    @abstractmethod
    def setup(self, model: nn.Module, param_groups: list[dict]) -> None:
        """Move or wrap the model and build the optimizer.

        Args:
            model: the tuned model (frozen and trainable parameters already decided).
            param_groups: the optimizer's groups (TuningPlan.param_groups), each with its own "lr",
                "weight_decay" and "name".
        """

    @abstractmethod
    def forward_backward(self, batch: dict, *, last_micro_step: bool, loss_weight: float | None = None) -> torch.Tensor:
        """One micro-step: the forward of this rank's micro-batch and the backward of its weighted loss.

        The gradient this rank contributes to the optimizer step is the sum over its micro-steps of
        loss_weight * d(micro-batch loss); the ranks' contributions are then averaged (DDP's and ZeRO's
        all-reduce mean), so a weight that must hold over all ranks is multiplied by the world size.

        The micro-batch loss is reduced as self.loss_reduction says. Under --loss_weighting token it is the
        sum of the micro-batch's token losses, and the caller passes world_size / (the step's supervised
        tokens over all micro-batches and ranks, counted before the first backward): the step's gradient is
        then exactly that of the mean over all its supervised tokens, however the step is split into
        micro-batches and ranks. Under --loss_weighting llava it is the micro-batch's own token mean and
        loss_weight may be left at None: every micro-batch then weighs 1 / gradient_accumulation_steps, so
        micro-batches with few supervised tokens count as much as long ones (LLaVA's weighting).

        Args:
            batch: the collator's batch, on self.device.
            last_micro_step: whether this micro-step ends the optimizer step (the gradient all-reduce runs then).
            loss_weight: this micro-batch loss's weight in the step's gradient; None (llava weighting only):
                1 / accumulation, applied the way each backend applies its own averaging.

        Returns:
            The micro-batch's loss as the model computes it (unweighted, detached).

        Raises:
            ValueError: loss_weight None with a summed loss (it would weigh the sum by 1 / accumulation).
        """

    @abstractmethod
    def optimizer_step(self, *, skip: bool = False) -> StepOutcome:
        """Clip, update and zero the gradients (collective).

        Args:
            skip: drop this update (some rank saw a non-finite loss); a non-finite gradient norm drops it too
                where the backend can.

        Returns:
            What the step did: its pre-clip gradient norm and whether the update was applied or dropped.
        """

    @abstractmethod
    def grad_group_norms(self) -> dict[str, float]:
        """{optimizer group name: L2 norm of its gradient} before clipping (unscaled); collective.

        Call after a step's last backward and before optimizer_step. Only --log_grad_stats calls it.
        """

    @abstractmethod
    def scheduler_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer an LR scheduler drives (the one whose step() reads param_groups' "lr")."""

    @abstractmethod
    def get_master(self, param: nn.Parameter) -> torch.Tensor:
        """The full fp32 master value of a trainable parameter, on CPU (collective)."""

    @abstractmethod
    def get_optimizer_state(self, param: nn.Parameter, key: str) -> torch.Tensor:
        """The full fp32 optimizer moment `key` (one of OPTIMIZER_STATE_KEYS) of a trainable parameter, on CPU
        (collective)."""

    @abstractmethod
    def set_master(self, param: nn.Parameter, value: torch.Tensor) -> None:
        """Set a trainable parameter's master and working copies from its full fp32 value (collective)."""

    @abstractmethod
    def set_optimizer_state(self, param: nn.Parameter, key: str, value: torch.Tensor) -> None:
        """Set a trainable parameter's optimizer moment `key` from its full value (collective)."""

    @abstractmethod
    def loss_scaler_state(self) -> dict | None:
        """The fp16 loss scaler's state for a checkpoint (JSON-serialisable), or None when there is none to keep."""

    @abstractmethod
    def load_loss_scaler_state(self, state: dict | None) -> None:
        """Restore what loss_scaler_state returned (None, or a strategy without a scaler: nothing to do)."""

    def set_optimizer_step(self, step: int) -> None:
        """Set the optimizer's own step counter (Adam's bias correction) on every state."""
        for group in self.scheduler_optimizer().param_groups:
            if "step" in group:
                group["step"] = step
        for state in self.scheduler_optimizer().state.values():
            if "step" in state:
                if isinstance(state["step"], torch.Tensor):
                    state["step"].fill_(step)
                else:
                    state["step"] = step

    def materialise_optimizer_state(self, batch: dict) -> None:
        """Make the optimizer create its (lazy) state without changing any weight: one step at lr 0
        on a zero-weighted micro-batch. Resume then overwrites that state with the saved one (collective)."""
        optimizer = self.scheduler_optimizer()
        if len(optimizer.state):
            return
        saved = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = 0.0
        self.forward_backward(batch, last_micro_step=True, loss_weight=0.0)
        self.optimizer_step()
        for group, lr in zip(optimizer.param_groups, saved):
            group["lr"] = lr


def group_norm(grads) -> float:
    """L2 norm of several gradient tensors together (None entries are parameters without a gradient)."""
    squares = [torch.linalg.vector_norm(g.detach().float()) ** 2 for g in grads if g is not None]
    return math.sqrt(float(sum(squares))) if squares else 0.0


def make_adamw(param_groups: list[dict], args: TrainingArguments, device: torch.device) -> torch.optim.Optimizer:
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
    """Plain PyTorch in one process or under DDP (see the module docstring)."""

    def setup(self, model: nn.Module, param_groups: list[dict]) -> None:
        make_trainable_fp32(model)
        model.to(self.device)
        self.module = TrainingModule(model, reduction=self.loss_reduction)
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

    def forward_backward(self, batch: dict, *, last_micro_step: bool, loss_weight: float | None = None) -> torch.Tensor:
        loss_weight = self.default_loss_weight(loss_weight)
        if loss_weight is None:
            loss_weight = 1.0 / self.args.gradient_accumulation_steps
        no_sync = self.context.distributed and not last_micro_step
        with self.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            with self._autocast():
                loss = self.wrapped(batch)
            weighted = loss * loss_weight
            (self.scaler.scale(weighted) if self.scaler else weighted).backward()
        return loss.detach()

    def optimizer_step(self, *, skip: bool = False) -> StepOutcome:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else math.inf
        grad_norm = float(clip_grad_norm(self.trainable, max_norm))
        # Under fp16 the scaler drops an overflowing step itself (routine); otherwise a non-finite norm is ours to drop.
        dropped_nonfinite = not self.scaler and not math.isfinite(grad_norm)
        applied = not (skip or dropped_nonfinite)
        if self.scaler:
            scale = self.scaler.get_scale()
            if applied:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            applied = applied and self.scaler.get_scale() >= scale  # a lowered scale: the scaler skipped the step
        elif applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(grad_norm=grad_norm, applied=applied, dropped_nonfinite=dropped_nonfinite)

    def grad_group_norms(self) -> dict[str, float]:
        scale = float(self.scaler.get_scale()) if self.scaler else 1.0  # fp16 grads are still scaled here
        return {name: group_norm(p.grad for p in params) / scale for name, params in self.named_groups}

    def scheduler_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer

    def get_master(self, param: nn.Parameter) -> torch.Tensor:
        return param.detach().float().cpu()

    def get_optimizer_state(self, param: nn.Parameter, key: str) -> torch.Tensor:
        return self.optimizer.state[param][key].detach().float().cpu()

    def set_master(self, param: nn.Parameter, value: torch.Tensor) -> None:
        with torch.no_grad():
            param.copy_(value.to(device=param.device, dtype=param.dtype))

    def set_optimizer_state(self, param: nn.Parameter, key: str, value: torch.Tensor) -> None:
        state = self.optimizer.state[param][key]
        state.copy_(value.to(device=state.device, dtype=state.dtype))

    def loss_scaler_state(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler else None

    def load_loss_scaler_state(self, state: dict | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
