"""The training loop (micro-steps, optimizer step, schedule, logging, checkpoints, resume) and its data order.

The loop fits on one screen because everything distributed sits behind the Strategy interface
and everything on disk behind the Checkpointer.

Data order: which samples each rank reads at each micro-step is a pure function of (seed, epoch),
so resume skips. An epoch is a list of per-device batches (index lists): the modality-length
sampler's when --group_by_modality_length is set, else a seeded permutation cut into batches.
Optimizer step s of the epoch uses the world_size * accumulation consecutive batches from
s * world_size * accumulation; micro-step m of rank r takes batch (m * world_size + r). So one
process with accumulation k sees exactly the samples that k ranks see in one step, and a
checkpoint's data position is just (epoch, steps done in that epoch). An epoch whose batch count
does not divide into whole steps is topped up with its own first batches.

Schedule: transformers' get_scheduler, a LambdaLR that scales every parameter group's own base
rate by one factor, so the ratios between groups (--mm_projector_lr, --norm_lr) hold all run long.
"""
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import get_scheduler

from llava_ln.core.distributed import all_gather_objects, all_reduce_sum
from llava_ln.core.errors import LlavaLnError
from llava_ln.training.args import steps_from
from llava_ln.training.checkpointing import RunIdentity, TrainState
from llava_ln.training.grad_stats import GradStatsWindow
from llava_ln.training.guards.step_guard import StepGuard
from llava_ln.training.guards.stop_signals import Interrupted
from llava_ln.training.memory.policy import peak_memory_gib

logger = logging.getLogger(__name__)


# ---- data order ----

class EpochPlan:
    def __init__(self, dataset_size: int, batch_size: int, world_size: int, accumulation: int, seed: int,
                 grouped_sampler=None):
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.world_size = world_size
        self.accumulation = accumulation
        self.seed = seed
        self.grouped_sampler = grouped_sampler
        self._steps_per_epoch = None

    @property
    def batches_per_step(self) -> int:
        return self.world_size * self.accumulation

    def device_batches(self, epoch: int) -> list[list[int]]:
        """Every per-device batch of the epoch, in order, topped up to whole optimizer steps."""
        if self.grouped_sampler is not None:
            self.grouped_sampler.set_epoch(epoch)
            batches = [list(b) for b in self.grouped_sampler.batches()]
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
            shortfall = -len(order) % self.batch_size
            if shortfall:
                order = np.concatenate([order, np.resize(order, shortfall)])
            batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        shortfall = -len(batches) % self.batches_per_step
        return batches + [batches[i % len(batches)] for i in range(shortfall)]

    def steps_per_epoch(self) -> int:
        # Every epoch has the same number of batches (only their order changes).
        if self._steps_per_epoch is None:
            self._steps_per_epoch = len(self.device_batches(0)) // self.batches_per_step
        return self._steps_per_epoch

    def rank_batches(self, epoch: int, rank: int, start_step: int) -> list[list[int]]:
        """This rank's micro-batches from optimizer step start_step of the epoch to its end."""
        batches = self.device_batches(epoch)
        mine = []
        for step in range(start_step, len(batches) // self.batches_per_step):
            base = step * self.batches_per_step
            for micro in range(self.accumulation):
                mine.append(batches[base + micro * self.world_size + rank])
        return mine


def make_loader(dataset, collate_fn, batches: list[list[int]], num_workers: int, seed: int, epoch: int):
    """A DataLoader over fixed batches. Its own generator keeps workers' seeds from drawing on the
    global RNG, so dropout masks after a resume match those of an uninterrupted run."""
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                      generator=generator, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


# ---- the loop ----

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
    stops: object = None  # training.guards.stop_signals.StopSignals: stop signals end the run with a checkpoint
    # Objects with due(step, total_steps) -> bool, run(step) -> {metric: value} and a `name`, called on
    # every rank after an optimizer step (train.py passes the in-training evaluator, which lives above us).
    hooks: tuple = ()

    def __post_init__(self):
        self.scheduler = make_scheduler(self.strategy.scheduler_optimizer(), self.args, self.total_steps)
        self.state = TrainState()
        self.guard = StepGuard(self.context, self.args.max_nonfinite_steps, self.stops)
        self.last_checkpoint = None

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
        self.last_checkpoint = directory

    def run(self, reporter) -> TrainState:
        args, state = self.args, self.state
        accumulation = args.gradient_accumulation_steps
        log_every = steps_from(args.logging_steps, self.total_steps)
        save_every = {"steps": steps_from(args.save_steps, self.total_steps),
                      "epoch": self.plan.steps_per_epoch()}.get(args.save_strategy, 0)
        window, grad_window = _Window(), GradStatsWindow()
        while state.global_step < self.total_steps:
            batches = self.plan.rank_batches(state.epoch, self.context.rank, state.step_in_epoch)
            loader = iter(make_loader(self.dataset, self.collate_fn, batches, args.dataloader_num_workers,
                                      args.seed, state.epoch))
            for _ in range(len(batches) // accumulation):
                for micro in range(accumulation):
                    batch = to_device(next(loader), self.strategy.device)
                    loss = float(self.strategy.forward_backward(batch, last_micro_step=micro == accumulation - 1))
                    window.add_micro(loss, float(batch["attention_mask"].sum()))
                    self.guard.add_loss(loss)
                verdict = self.guard.before_step()  # collective: non-finite losses and stop signals, all ranks
                if args.log_grad_stats and not verdict.nonfinite_loss:  # before optimizer_step, which clips
                    grad_window.add(self.strategy.grad_group_norms())
                grad_norm = self.strategy.optimizer_step(skip=verdict.nonfinite_loss)
                skipped = self.guard.after_step(state.global_step + 1, verdict, self.strategy, grad_norm,
                                                self.last_checkpoint)
                state.skipped_steps += skipped
                window.add_step(grad_norm, skipped)
                self.scheduler.step()
                state.global_step += 1
                state.step_in_epoch += 1
                if log_every and (state.global_step % log_every == 0 or state.global_step == self.total_steps):
                    self._log(reporter, window, grad_window)
                    window, grad_window = _Window(), GradStatsWindow()
                reporter.step()
                if not verdict.stop_signal:  # a stop signal ends the run now: no evaluation first
                    for hook in self.hooks:
                        if hook.due(state.global_step, self.total_steps):
                            started = time.perf_counter()
                            metrics = hook.run(state.global_step)
                            reporter.log_section(state.global_step, hook.name, metrics, time.perf_counter() - started)
                saved = save_every and state.global_step % save_every == 0 and state.global_step < self.total_steps
                if saved or (verdict.stop_signal and state.global_step < self.total_steps):
                    self.last_checkpoint = self.checkpointer.save_checkpoint(args.output_dir, state, self.scheduler,
                                                                             self.identity, args.save_total_limit)
                    if verdict.stop_signal:
                        raise Interrupted(verdict.stop_signal, f"after step {state.global_step}: checkpoint "
                                          f"{self.last_checkpoint} written; continue with --resume_from_checkpoint "
                                          "latest")
                if state.global_step >= self.total_steps:
                    break
            if state.step_in_epoch >= self.plan.steps_per_epoch():
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
        return state

    def _log(self, reporter, window, grad_window) -> None:
        loss_sum, micro, tokens = all_reduce_sum(self.context, [window.loss_sum, window.micro, window.tokens])
        optimizer = self.strategy.scheduler_optimizer()
        reporter.log(self.state.global_step, {
            "loss": loss_sum / micro if micro else float("nan"),  # NaN: every step of the window was skipped
            "lr": self.args.learning_rate * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch),
            "lrs": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
            "grad_norm": window.grad_norm_sum / window.steps if window.steps else float("nan"),
            "tokens": tokens,
            "epoch": self.state.epoch + self.state.step_in_epoch / self.plan.steps_per_epoch(),
            **({"skipped_steps": self.state.skipped_steps} if self.state.skipped_steps else {}),
            "peak_memory_gib": max(all_gather_objects(self.context, peak_memory_gib(self.strategy.device))),
            **grad_window.record(),
        })


class _Window:
    """Sums since the last log line."""

    def __init__(self):
        self.loss_sum, self.micro, self.tokens, self.grad_norm_sum, self.steps = 0.0, 0, 0.0, 0.0, 0

    def add_micro(self, loss: float, tokens: float) -> None:
        if math.isfinite(loss):  # a skipped step's loss would turn the logged mean into NaN
            self.loss_sum += loss
            self.micro += 1
        self.tokens += tokens

    def add_step(self, grad_norm: float, skipped: bool = False) -> None:
        if not skipped:
            self.grad_norm_sum += grad_norm
            self.steps += 1


def warmup_steps_for(args, total_steps: int) -> int:
    return args.warmup_steps if args.warmup_steps > 0 else int(round(args.warmup_ratio * total_steps))


def make_scheduler(optimizer, args, total_steps: int):
    try:
        return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps_for(args, total_steps),
                             num_training_steps=total_steps)
    except ValueError as err:
        raise LlavaLnError(f"--lr_scheduler_type {args.lr_scheduler_type!r}: {err}") from None
