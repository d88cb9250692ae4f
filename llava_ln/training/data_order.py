"""Which samples each rank reads at each micro-step: a pure function of (seed, epoch), so resume skips.

An epoch is a list of per-device batches (index lists): the token-budget packer's with --packing
(data.packing: every epoch the same number of micro-batches), the modality-length sampler's when
--group_by_modality_length is set, else a seeded permutation cut into batches. Optimizer step s
of the epoch uses the world_size * accumulation consecutive batches from s * world_size *
accumulation; micro-step m of rank r takes batch (m * world_size + r). So one process with
accumulation k sees exactly the samples that k ranks see in one step, and a checkpoint's data
position is just (epoch, steps done in that epoch).
"""
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from llava_ln.data.index import ModalityLengthGroupedSampler
from llava_ln.data.packing import TokenBudgetPacker
from llava_ln.training.args import TrainingArguments


@dataclass(kw_only=True)
class DataOrder:
    """The per-device batches of every epoch and which of them each rank reads from a given step on."""

    dataset_size: int  # samples in the training set
    batch_size: int  # samples per device per micro-step
    world_size: int  # ranks
    accumulation: int  # micro-steps per optimizer step
    seed: int  # the data seed (--data_seed, else --seed)
    grouped_sampler: ModalityLengthGroupedSampler | None = None  # --group_by_modality_length; None: shuffle
    packer: TokenBudgetPacker | None = None  # --packing: micro-batches by token budget (batch_size unused)
    _steps_per_epoch: int | None = field(default=None, init=False, repr=False)

    @property
    def batches_per_step(self) -> int:
        return self.world_size * self.accumulation

    def device_batches(self, epoch: int) -> list[list[int]]:
        """Every per-device batch of the epoch, in order, topped up to whole optimizer steps.

        [IMPORTANT] Deliberate approximation of "one epoch": a last batch short of batch_size is filled with
        samples from the start of the epoch's order, and an epoch whose batch count does not divide into
        whole optimizer steps is topped up with its own first batches, so a few samples are read twice per
        epoch. Every step then has full batches on every rank, which keeps ranks in step and the data
        position a plain step count.
        """
        if self.packer is not None:
            batches = self.packer.batches(epoch)
        elif self.grouped_sampler is not None:
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


def total_steps_for(args: TrainingArguments, order: DataOrder) -> int:
    """The run's optimizer steps: --max_steps when set, else --num_train_epochs worth (at least one)."""
    if args.max_steps > 0:
        return args.max_steps
    return max(1, math.ceil(args.num_train_epochs * order.steps_per_epoch()))


def make_loader(dataset: Dataset, collate_fn: Callable[[list[dict]], dict], batches: list[list[int]], *,
                num_workers: int, seed: int, epoch: int) -> DataLoader:
    """A DataLoader over fixed batches. Its own generator keeps workers' seeds from drawing on the
    global RNG, so dropout masks after a resume match those of an uninterrupted run."""
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                      generator=generator, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)
