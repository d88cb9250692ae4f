"""The training loop: micro-steps, optimizer step, schedule, logging, checkpoints, resume.

It fits on one screen because everything distributed sits behind the Strategy interface
and everything on disk behind the Checkpointer.
"""
import logging
import math
from dataclasses import dataclass

from llava_ln.core.distributed import all_reduce_sum
from llava_ln.training.args import steps_from
from llava_ln.training.checkpointing import RunIdentity, TrainState
from llava_ln.training.data_order import EpochPlan, make_loader
from llava_ln.training.optimizer import make_scheduler

logger = logging.getLogger(__name__)


def total_steps_for(args, plan: EpochPlan) -> int:
    if args.max_steps > 0:
        return args.max_steps
    return max(1, math.ceil(args.num_train_epochs * plan.steps_per_epoch()))


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


@dataclass
class Loop:
    args: object
    context: object
    strategy: object
    checkpointer: object
    dataset: object
    collate_fn: object
    plan: EpochPlan
    total_steps: int
    identity: RunIdentity

    def __post_init__(self):
        self.scheduler = make_scheduler(self.strategy.scheduler_optimizer(), self.args, self.total_steps)
        self.state = TrainState()

    def priming_batch(self) -> dict:
        """This rank's first micro-batch, read straight from the dataset (no loader, no RNG use)."""
        indices = self.plan.rank_batches(0, self.context.rank, 0)[0]
        return to_device(self.collate_fn([self.dataset[i] for i in indices]), self.strategy.device)

    def resume(self, directory: str) -> None:
        # Any micro-batch can prime the optimizer's state; the data position comes from the checkpoint.
        self.state = self.checkpointer.load_checkpoint(directory, self.scheduler, self.identity,
                                                       self.priming_batch())
        logger.info("resumed from %s at step %d (epoch %d, step %d of it)", directory, self.state.global_step,
                    self.state.epoch, self.state.step_in_epoch)

    def run(self, reporter) -> TrainState:
        args, state = self.args, self.state
        accumulation = args.gradient_accumulation_steps
        log_every = steps_from(args.logging_steps, self.total_steps)
        save_every = steps_from(args.save_steps, self.total_steps) if args.save_strategy == "steps" else 0
        window = _Window()
        while state.global_step < self.total_steps:
            batches = self.plan.rank_batches(state.epoch, self.context.rank, state.step_in_epoch)
            loader = iter(make_loader(self.dataset, self.collate_fn, batches, args.dataloader_num_workers,
                                      args.seed, state.epoch))
            for _ in range(len(batches) // accumulation):
                for micro in range(accumulation):
                    batch = to_device(next(loader), self.strategy.device)
                    loss = self.strategy.forward_backward(batch, last_micro_step=micro == accumulation - 1)
                    window.add_micro(float(loss), float(batch["attention_mask"].sum()))
                window.add_step(self.strategy.optimizer_step())
                self.scheduler.step()
                state.global_step += 1
                state.step_in_epoch += 1
                if log_every and (state.global_step % log_every == 0 or state.global_step == self.total_steps):
                    self._log(reporter, window)
                    window = _Window()
                reporter.step()
                if save_every and state.global_step % save_every == 0 and state.global_step < self.total_steps:
                    self.checkpointer.save_checkpoint(args.output_dir, state, self.scheduler, self.identity,
                                                      args.save_total_limit)
                if state.global_step >= self.total_steps:
                    break
            if state.step_in_epoch >= self.plan.steps_per_epoch():
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
        return state

    def _log(self, reporter, window) -> None:
        loss_sum, micro, tokens = all_reduce_sum(self.context, [window.loss_sum, window.micro, window.tokens])
        optimizer = self.strategy.scheduler_optimizer()
        reporter.log(self.state.global_step, {
            "loss": loss_sum / max(micro, 1),
            "lr": self.args.learning_rate * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch),
            "lrs": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
            "grad_norm": window.grad_norm_sum / max(window.steps, 1),
            "tokens": tokens,
            "epoch": self.state.epoch + self.state.step_in_epoch / self.plan.steps_per_epoch(),
        })


class _Window:
    """Sums since the last log line."""

    def __init__(self):
        self.loss_sum, self.micro, self.tokens, self.grad_norm_sum, self.steps = 0.0, 0, 0.0, 0.0, 0

    def add_micro(self, loss: float, tokens: float) -> None:
        self.loss_sum += loss
        self.micro += 1
        self.tokens += tokens

    def add_step(self, grad_norm: float) -> None:
        self.grad_norm_sum += grad_norm
        self.steps += 1
