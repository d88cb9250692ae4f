"""Padding-free micro-batches (--packing): which samples share a micro-batch, and the packed row they make.

Token budget. Each micro-batch holds whole samples whose token counts add up to at most
--max_tokens_per_batch. TokenBudgetPacker fills them greedily, longest sample first, each micro-batch
topped up with the longest sample that still fits ("best fit decreasing"), so almost every micro-batch
is full. The samples are shuffled from (seed, epoch) before the stable sort by length, so which
samples of equal length share a micro-batch changes every epoch, and the micro-batches are then
shuffled from the same generator. The decisions depend only on the lengths, never on which sample
holds one, so every epoch has the same number of micro-batches (DataOrder relies on that) and the
order is a pure function of (lengths, budget, seed, epoch): a resumed run reads exactly what an
uninterrupted one would.

The packed row (PackedCollator). A micro-batch's samples are concatenated into one row, in order;
position_ids restart at 0 at each sample, and that is what confines attention to a sample:
transformers derives the per-sample (block-diagonal causal) mask from position ids that restart,
for every attention implementation that builds its mask through transformers.masking_utils (eager,
sdpa, flex_attention), and FlashAttention-2 runs its variable-length kernel from them (cumulative
lengths taken from the restarts) when the batch is one row and no attention mask is passed; the
training forward passes none for a packed batch (model.forward). The first label of every sample
is masked: the last token of one sample never learns to predict the first token of the next (in an
unpadded batch that label is never a target either, so packed and unpacked losses are the same sums).
Images go in sample order, so each sample's image features land in its own placeholders.
"""
from bisect import bisect_right

import numpy as np
import torch

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import image_fields


class TokenBudgetPacker:
    """Micro-batches of whole samples holding at most `budget` tokens each (module docstring)."""

    def __init__(self, lengths, budget: int, seed: int, describe_sample=None):
        """lengths: exact token count of each sample; describe_sample(index) -> how errors name a sample."""
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.budget = int(budget)
        self.seed = seed
        if self.budget < 1:
            raise LlavaLnError(f"--max_tokens_per_batch {budget} must be >= 1")
        if len(self.lengths) == 0:
            raise LlavaLnError("packing: there are no samples to pack")
        longest = int(np.argmax(self.lengths))
        if self.lengths[longest] > self.budget:
            name = describe_sample(longest) if describe_sample else f"sample #{longest}"
            raise LlavaLnError(f"{name}: {int(self.lengths[longest])} tokens, more than --max_tokens_per_batch "
                               f"{self.budget}; raise the budget to at least --model_max_length")
        if self.lengths.min() < 1:
            raise LlavaLnError("packing: a sample has no tokens")

    def batches(self, epoch: int) -> list[list[int]]:
        """The micro-batches of `epoch`, in order (each a list of sample indices)."""
        rng = np.random.default_rng([self.seed, epoch])
        shuffled = rng.permutation(len(self.lengths))
        by_length: dict[int, list[int]] = {}
        # Longest first, stable: samples of one length keep their shuffled order. Reversed so pop() takes the first.
        for index in reversed(shuffled[np.argsort(-self.lengths[shuffled], kind="stable")].tolist()):
            by_length.setdefault(int(self.lengths[index]), []).append(index)
        lengths_left = sorted(by_length)  # the lengths that still have samples, ascending

        def take(length: int) -> int:
            samples = by_length[length]
            index = samples.pop()
            if not samples:
                del lengths_left[bisect_right(lengths_left, length) - 1]
            return index

        packed = []
        while lengths_left:
            longest = lengths_left[-1]
            batch, room = [take(longest)], self.budget - longest
            while True:
                position = bisect_right(lengths_left, room) - 1
                if position < 0:
                    break
                length = lengths_left[position]
                batch.append(take(length))
                room -= length
            packed.append(batch)
        return [packed[i] for i in rng.permutation(len(packed))]

    def budget_fill(self, epoch: int = 0) -> float:
        """Share of the budget the micro-batches of `epoch` fill (tokens / (micro-batches * budget))."""
        batches = self.batches(epoch)
        return float(self.lengths.sum()) / (len(batches) * self.budget)


def packed_positions(lengths: list[int]) -> torch.Tensor:
    """Position ids of samples of these lengths side by side: 0..n-1 for each (LongTensor[sum(lengths)])."""
    return torch.cat([torch.arange(n, dtype=torch.long) for n in lengths])


class PackedCollator:
    """Samples -> one packed row in the batch contract (data.encode), plus position_ids (module docstring)."""

    def __call__(self, samples: list) -> dict:
        labels = []
        for sample in samples:
            own = sample["labels"].clone()
            own[0] = IGNORE_INDEX  # no token predicts the next sample's first token
            labels.append(own)
        input_ids = torch.cat([s["input_ids"] for s in samples]).unsqueeze(0)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": torch.cat(labels).unsqueeze(0),
            "position_ids": packed_positions([len(s["input_ids"]) for s in samples]).unsqueeze(0),
            **image_fields(samples),
        }
