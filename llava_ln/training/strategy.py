"""What the training loop needs from a distribution strategy, and the choice between the two.

A strategy owns the wrapped model and the optimizer: it runs a micro-step (forward +
backward), an optimizer step (clip, update, zero), and reads or writes the full fp32
master value and optimizer moments of any trainable parameter by name. The loop and the
checkpoint code speak only this interface, so plain PyTorch (one process or DDP) and
DeepSpeed ZeRO-1/2/3 share one loop and one world-size-independent checkpoint format.
"""
from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import nn

from llava_ln.model.forward import multimodal_forward

OPTIMIZER_STATE_KEYS = ("exp_avg", "exp_avg_sq")
IGNORE_INDEX = -100


class TrainingModule(nn.Module):
    """The whole multimodal forward as one module, so DDP's and ZeRO's hooks see every part run.

    The loss is the usual mean next-token cross-entropy over supervised tokens, but the LM head
    runs only at positions whose next token is supervised in some sample of the batch (image
    and prompt positions never are): the full [batch, length, vocab] fp32 logits that the
    model's own loss would build are the largest single activation of a LLaVA step.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        labels = batch["labels"]
        targets = labels[:, 1:]
        # Positions t whose next token is supervised anywhere in the batch (same for every row:
        # transformers' logits_to_keep accepts a 1-D position tensor in every 5.x release).
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = multimodal_forward(self.model, **inputs, logits_to_keep=keep).logits
        if keep.numel() == 0:  # no supervised token (the dataset never yields one): a zero loss in the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=IGNORE_INDEX)


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

    @abstractmethod
    def optimizer_step(self) -> float:
        """Clip, update, zero the gradients; returns the global gradient norm before clipping."""

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
    def get_frozen_value(self, param):
        """Full value of any parameter as the module holds it, on CPU (collective)."""

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


def make_strategy(args, context, precision, hidden_size: int) -> Strategy:
    if args.deepspeed:
        from llava_ln.training.strategy_deepspeed import DeepSpeedStrategy

        return DeepSpeedStrategy(args, context, precision, hidden_size)
    from llava_ln.training.strategy_torch import TorchStrategy

    return TorchStrategy(args, context, precision)
