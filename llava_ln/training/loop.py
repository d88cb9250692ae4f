"""The training loop: micro-steps, the optimizer step, schedule, logging, hooks, checkpoints and resume.

The loop fits on one screen because everything distributed sits behind the Strategy interface,
everything on disk behind the Checkpointer, which samples each rank reads in DataOrder
(training.data_order), and each step's checks in the StepGuard.

One optimizer step: this rank reads all its micro-batches of the step, runs
Strategy.forward_backward on each, the StepGuard agrees with every rank on non-finite losses and
stop signals, Strategy.optimizer_step returns a StepOutcome that the guard judges, and the
schedule advances. Then, when due: a log line, the hooks (in-training evaluation), a checkpoint.

Loss weighting (--loss_weighting): under `token` (the default) each micro-batch's loss is the sum
of its token losses, and before the step's first backward every rank counts the supervised tokens
of all its micro-batches of the step and one all-reduce sums them over ranks; each micro-batch then
weighs world_size / step_tokens (the world size undoes the ranks' gradient averaging), so the step's
gradient is that of the mean over all the step's supervised tokens, whatever the split into
micro-batches and ranks. A step without any supervised token on any rank is skipped (no update, a
warning; it counts as a skipped step). Under `llava` each micro-batch's own mean weighs
1 / accumulation (Strategy.forward_backward). The logged loss follows the same rule: the token mean
over the logging window's steps (token), or the mean of its micro-batch means (llava).

Schedule: transformers' get_scheduler, a LambdaLR that scales every parameter group's own base
rate by one factor, so the ratios between groups (--mm_projector_lr, --norm_lr) hold all run long.
"""
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import Dataset
from transformers import get_scheduler

from llava_ln.core.distributed import DistContext, all_gather_objects, all_reduce_sum
from llava_ln.core.errors import LlavaLnError
from llava_ln.kernels import count_supervised_tokens
from llava_ln.training.args import TrainingArguments, steps_from
from llava_ln.training.checkpointing import Checkpointer, RunIdentity, TrainState
from llava_ln.training.data_order import DataOrder, make_loader
from llava_ln.training.grad_stats import GradStatsWindow
from llava_ln.training.guards.step_guard import PendingSignals, StepGuard, StepVerdict
from llava_ln.training.guards.stop_signals import Interrupted
from llava_ln.training.memory.policy import peak_memory_gib
from llava_ln.training.strategy import StepOutcome, Strategy

logger = logging.getLogger(__name__)


class StepHook(Protocol):
    """Work the loop runs on every rank after an optimizer step, when due (train.py passes the in-training
    evaluator, evaluation.during_training.TrainingEvaluator, from the package above this one)."""

    name: str  # the log.jsonl section its metrics go under

    def due(self, step: int, total_steps: int) -> bool:
        """Whether to run after optimizer step `step` (1-based) of total_steps."""

    def run(self, step: int) -> dict:
        """Collective: do the work; returns {metric: number}, the same on every rank."""


class ProgressReporter(Protocol):
    """Where the loop's numbers go (training.reporting.Reporter: rank 0 writes, the other ranks drop them)."""

    def step(self) -> None:
        """One optimizer step done (the progress bar)."""

    def log(self, step: int, metrics: dict) -> None:
        """A log line of training metrics."""

    def log_section(self, step: int, name: str, metrics: dict, *, seconds: float = 0.0) -> None:
        """A hook's metrics under their own name; seconds: how long producing them took."""


@dataclass(kw_only=True)
class Loop:
    args: TrainingArguments
    context: DistContext
    strategy: Strategy  # set up: model wrapped, optimizer built
    checkpointer: Checkpointer
    dataset: Dataset
    collate_fn: Callable[[list[dict]], dict]  # samples -> the batch contract (data.DataCollator)
    data_order: DataOrder
    total_steps: int
    identity: RunIdentity  # what a resume must match
    stops: PendingSignals | None = None  # stop signals (--stop_signals) end the run with a checkpoint
    hooks: tuple[StepHook, ...] = ()

    def __post_init__(self) -> None:
        self.scheduler = make_scheduler(self.strategy.scheduler_optimizer(), self.args, self.total_steps)
        self.state = TrainState()
        self.guard = StepGuard(self.context, self.args.max_nonfinite_steps, self.stops)
        self.last_checkpoint: str | None = None
        self.log_every = steps_from(self.args.logging_steps, self.total_steps)
        self.save_every = {"steps": steps_from(self.args.save_steps, self.total_steps),
                           "epoch": self.data_order.steps_per_epoch()}.get(self.args.save_strategy, 0)

    def priming_batch(self) -> dict:
        """This rank's first micro-batch, read straight from the dataset (no loader, no RNG use)."""
        indices = self.data_order.rank_batches(0, self.context.rank, 0)[0]
        return to_device(self.collate_fn([self.dataset[i] for i in indices]), self.strategy.device)

    def resume(self, directory: str) -> TrainState:
        """Collective: continue from checkpoint `directory`; returns the restored state (also self.state)."""
        # Any micro-batch can prime the optimizer's state; the data position comes from the checkpoint.
        self.state = self.checkpointer.load_checkpoint(directory, self.scheduler, self.identity,
                                                       first_batch=self.priming_batch())
        logger.info("resumed from %s at step %d (epoch %d, step %d of it)", directory, self.state.global_step,
                    self.state.epoch, self.state.step_in_epoch)
        self.last_checkpoint = directory
        return self.state

    def run(self, reporter: ProgressReporter) -> TrainState:
        """Collective: train from self.state to total_steps; returns the final state.

        Raises:
            Interrupted: a stop signal arrived (after the checkpoint of the step that saw it was written).
            TrainingDiverged: non-finite losses or gradients (training.guards.step_guard).
        """
        state, window = self.state, _Window()
        while state.global_step < self.total_steps:
            for micro_batches in self._steps_left_in_epoch():
                verdict = self._optimizer_step(micro_batches, window)
                if self.log_every and (state.global_step % self.log_every == 0
                                       or state.global_step == self.total_steps):
                    self._log(reporter, window)
                    window = _Window()
                reporter.step()
                if not verdict.stop_signal:  # a stop signal ends the run now: no evaluation first
                    self._run_hooks(reporter)
                self._save_if_due(verdict.stop_signal)
                if state.global_step >= self.total_steps:
                    break
            if state.step_in_epoch >= self.data_order.steps_per_epoch():
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
        return state

    def _steps_left_in_epoch(self) -> Iterator[list[dict]]:
        """This rank's collated micro-batches (on the CPU) of each step left in the epoch, one list per step.

        A step's micro-batches are all read before its first forward, so what must be known of the whole
        step before its first backward (a token-weighted loss needs its supervised-token count) can be."""
        state, accumulation = self.state, self.args.gradient_accumulation_steps
        batches = self.data_order.rank_batches(state.epoch, self.context.rank, state.step_in_epoch)
        loader = iter(make_loader(self.dataset, self.collate_fn, batches, num_workers=self.args.dataloader_num_workers,
                                  seed=self.args.seed, epoch=state.epoch))
        for _ in range(len(batches) // accumulation):
            yield [next(loader) for _ in range(accumulation)]

    def _optimizer_step(self, micro_batches: list[dict], window: "_Window") -> StepVerdict:
        """Forward and backward over the step's micro-batches, then the guarded update; advances the state."""
        token_weighted = self.args.loss_weighting == "token"
        # Counted on the CPU batches, before any backward of the step: the weights must be known up front.
        supervised = [count_supervised_tokens(batch["labels"]) for batch in micro_batches]
        loss_weight = None  # llava: each micro-batch's mean weighs 1 / accumulation (Strategy.forward_backward)
        if token_weighted:
            step_tokens = self._step_supervised_tokens(supervised)
            if step_tokens == 0:
                return self._skip_unsupervised_step()
            loss_weight = self.context.world_size / step_tokens
        losses, last = [], len(micro_batches) - 1
        for index, batch in enumerate(micro_batches):
            batch = to_device(batch, self.strategy.device)
            losses.append(float(self.strategy.forward_backward(batch, last_micro_step=index == last,
                                                               loss_weight=loss_weight)))
            window.add_micro(losses[-1], supervised[index] if token_weighted else 1,
                             float(batch["attention_mask"].sum()))
        verdict = self.guard.before_step(losses)  # collective: non-finite losses and stop signals, all ranks
        if self.args.log_grad_stats and not verdict.nonfinite_loss:  # before optimizer_step, which clips
            window.grad_stats.add(self.strategy.grad_group_norms())
        outcome = self.strategy.optimizer_step(skip=verdict.nonfinite_loss)
        skipped = self.guard.after_step(self.state.global_step + 1, verdict, outcome,
                                        last_checkpoint=self.last_checkpoint)
        window.add_step(outcome, skipped)
        self._advance(skipped)
        return verdict

    def _step_supervised_tokens(self, supervised: list[int]) -> int:
        """Collective: the supervised tokens of the whole step, over every micro-batch on every rank."""
        return int(all_reduce_sum(self.context, [float(sum(supervised))])[0])

    def _skip_unsupervised_step(self) -> StepVerdict:
        """A step whose micro-batches hold no supervised token on any rank (every rank agrees, from the
        all-reduced count): no forward, no update, a warning; stop signals are still heard."""
        verdict = self.guard.before_step([])  # collective, as on a normal step
        logger.warning("step %d: no micro-batch of this step has a supervised token on any rank (every label is "
                       "ignored after the next-token shift); step skipped, no update", self.state.global_step + 1)
        self._advance(skipped=True)
        return verdict

    def _advance(self, skipped: bool) -> None:
        """The schedule and the data position move on after every step, skipped or not."""
        self.scheduler.step()
        self.state.skipped_steps += skipped
        self.state.global_step += 1
        self.state.step_in_epoch += 1

    def _run_hooks(self, reporter: ProgressReporter) -> None:
        step = self.state.global_step
        for hook in self.hooks:
            if hook.due(step, self.total_steps):
                started = time.perf_counter()
                metrics = hook.run(step)
                reporter.log_section(step, hook.name, metrics, seconds=time.perf_counter() - started)

    def _save_if_due(self, stop_signal: int | None) -> None:
        """A checkpoint every save_every steps, and one when a stop signal arrived; then stop on the signal.
        After the last step there is none: train.py saves the run folder."""
        step = self.state.global_step
        if step >= self.total_steps or not (stop_signal or (self.save_every and step % self.save_every == 0)):
            return
        self.last_checkpoint = self.checkpointer.save_checkpoint(self.args.output_dir, self.state, self.scheduler,
                                                                 identity=self.identity,
                                                                 save_total_limit=self.args.save_total_limit)
        if stop_signal:
            raise Interrupted(stop_signal, f"after step {step}: checkpoint {self.last_checkpoint} written; continue "
                              "with --resume_from_checkpoint latest")

    def _log(self, reporter: ProgressReporter, window: "_Window") -> None:
        loss_sum, loss_count, tokens = all_reduce_sum(self.context, [window.loss_sum, window.loss_count,
                                                                     window.tokens])
        optimizer = self.strategy.scheduler_optimizer()
        reporter.log(self.state.global_step, {
            "loss": loss_sum / loss_count if loss_count else float("nan"),  # NaN: every step of the window was skipped
            "loss_weighting": self.args.loss_weighting,
            "lr": self.args.learning_rate * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch),
            "lrs": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
            "grad_norm": window.grad_norm_sum / window.steps if window.steps else float("nan"),
            "tokens": tokens,
            "epoch": self.state.epoch + self.state.step_in_epoch / self.data_order.steps_per_epoch(),
            **({"skipped_steps": self.state.skipped_steps} if self.state.skipped_steps else {}),
            "peak_memory_gib": max(all_gather_objects(self.context, peak_memory_gib(self.strategy.device))),
            **window.grad_stats.record(),
        })


class _Window:
    """Sums since the last log line, and the per-group gradient norms of its steps (--log_grad_stats).

    The logged loss is loss_sum / loss_count: token weighting adds each micro-batch's token-loss sum and its
    supervised tokens (the window's token mean), llava weighting each micro-batch's mean and 1."""

    def __init__(self):
        self.loss_sum, self.loss_count, self.tokens, self.grad_norm_sum, self.steps = 0.0, 0, 0.0, 0.0, 0
        self.grad_stats = GradStatsWindow()

    def add_micro(self, loss: float, count: int, tokens: float) -> None:
        """loss: what the strategy returned; count: what it averages over in the log; tokens: computed tokens."""
        if math.isfinite(loss):  # a skipped step's loss would turn the logged mean into NaN
            self.loss_sum += loss
            self.loss_count += count
        self.tokens += tokens

    def add_step(self, outcome: StepOutcome, skipped: bool) -> None:
        if not skipped:
            self.grad_norm_sum += outcome.grad_norm
            self.steps += 1


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def warmup_steps_for(args: TrainingArguments, total_steps: int) -> int:
    return args.warmup_steps if args.warmup_steps > 0 else int(round(args.warmup_ratio * total_steps))


def make_scheduler(optimizer: torch.optim.Optimizer, args: TrainingArguments,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    try:
        return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps_for(args, total_steps),
                             num_training_steps=total_steps)
    except ValueError as err:
        raise LlavaLnError(f"--lr_scheduler_type {args.lr_scheduler_type!r}: {err}") from None
