"""Padding-free micro-batches (--packing): which samples share a micro-batch, and the packed rows they make.

Token budget. Each micro-batch holds whole samples whose rows, padded to the longest of them, add up
to at most --max_tokens_per_batch tokens. TokenBudgetPacker fills rows greedily, longest sample first,
each row topped up with the longest sample that still fits ("best fit decreasing"); micro-batches
are then made of rows of like length (rows sorted by length, as many per micro-batch as the budget
holds), so what padding is left is the small difference between neighbouring rows. The samples are
shuffled from (seed, epoch) before the stable sorts by length, so which samples of equal length
share a row changes every epoch, and the micro-batches are then shuffled from the same generator.
The decisions depend only on the lengths, never on which sample holds one, so every epoch has the
same number of micro-batches (DataOrder relies on that) and the order is a pure function of
(lengths, budget, seed, epoch): a resumed run reads exactly what an uninterrupted one would.

One row or several. Under FlashAttention-2 a micro-batch is one row of up to the whole budget:
transformers runs FlashAttention's variable-length kernel from position ids that restart (cumulative
lengths taken from the restarts) when the batch is one row and no attention mask is passed, so each
sample costs attention over its own length only. Every other attention implementation builds a
block-diagonal causal mask from the same position ids (transformers.masking_utils' packed-sequence
detection: eager, sdpa, flex_attention) and computes the scores of the whole row, masked ones
included: a row of several samples costs the square of its length. There rows grow only to the
median sample length (a longer sample is a row of its own), so short samples share rows and long
ones pay no more attention than unpacked (training.packing decides which; bench/packing.py measures
the padding and the step time).

The packed rows (PackedCollator). A row holds consecutive samples of the micro-batch; position_ids
restart at 0 at each sample, and that is what confines attention to a sample; the training forward
passes no attention mask for a packed batch (model.forward). The first label of every sample is
masked: the last token of one sample never learns to predict the first token of the next (in an
unpacked batch that label is never a target either, so packed and unpacked losses are the same sums).
Images go in sample order, so each sample's image features land in its own placeholders.
"""
from bisect import bisect_right

import numpy as np
import torch

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import image_fields


class TokenBudgetPacker:
    """Micro-batches of whole samples, at most `budget` tokens each (padding included), in rows (module docstring)."""

    def __init__(self, lengths, budget: int, seed: int, *, one_row: bool = False, describe_sample=None):
        """lengths: exact token count of each sample; one_row: each micro-batch one row (FlashAttention), else rows
        of about the median sample; describe_sample(index) -> how errors name a sample."""
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
        self.one_row = one_row
        # How long a row of several samples may grow; a longer sample is a row of its own.
        self.row_tokens = self.budget if one_row else max(1, int(np.median(self.lengths)))

    def _rows(self, rng: np.random.Generator) -> list[list[int]]:
        """Best fit decreasing into rows of row_tokens, ties in shuffled order."""
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

        rows = []
        while lengths_left:
            longest = lengths_left[-1]
            row, room = [take(longest)], self.row_tokens - longest
            while room > 0:
                position = bisect_right(lengths_left, room) - 1
                if position < 0:
                    break
                length = lengths_left[position]
                row.append(take(length))
                room -= length
            rows.append(row)
        return rows

    def batches(self, epoch: int) -> list[list[int]]:
        """The micro-batches of `epoch`, in order: each the samples of its rows, row after row."""
        rng = np.random.default_rng([self.seed, epoch])
        rows = self._rows(rng)
        filled = np.array([int(self.lengths[row].sum()) for row in rows])
        # A micro-batch's rows are padded to its longest: rows of like length go together (ties shuffled), as many
        # as keep rows x longest row within the budget.
        order = rng.permutation(len(rows))
        order = order[np.argsort(-filled[order], kind="stable")].tolist()
        batches, current, width = [], [], 0
        for row in order:
            if current and (len(current) + 1) * width > self.budget:
                batches.append([i for r in current for i in rows[r]])
                current = []
            if not current:
                width = int(filled[row])
            current.append(row)
        batches.append([i for r in current for i in rows[r]])
        return [batches[i] for i in rng.permutation(len(batches))]

    def computed_tokens(self, epoch: int = 0) -> tuple[int, int]:
        """(tokens of samples, tokens computed) over the micro-batches of `epoch`: the rest is row padding."""
        computed = 0
        for batch in self.batches(epoch):
            lengths = self.lengths[batch].tolist()
            rows = split_rows(lengths, self.row_tokens)
            computed += len(rows) * max(sum(lengths[i] for i in row) for row in rows)
        return int(self.lengths.sum()), computed


def split_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Consecutive samples (by position in `lengths`) into as few rows of at most row_tokens as keep their order (a
    longer sample alone). The packer lays its rows out one after another, so this finds them, or fewer."""
    rows, used = [], row_tokens + 1
    for position, length in enumerate(lengths):
        if used + length > row_tokens:
            rows.append([])
            used = 0
        rows[-1].append(position)
        used += length
    return rows


class PackedCollator:
    """Samples -> packed rows in the batch contract (data.encode), plus position_ids (module docstring).

    A row shorter than the longest is padded at its end; the padding continues the position ids of the row's last
    sample and is masked in attention_mask and labels. Causal attention means no real token sees padding that
    follows it, so the model needs no padding mask.

    row_tokens None: the micro-batch is always one row (FlashAttention), even when its samples add up to more than
    the budget (a sample replaced when read, data.dataset): FlashAttention finds the samples of a row from its
    position ids only in a batch of one row, and would let the samples of each row of several attend to each other."""

    def __init__(self, pad_token_id: int, row_tokens: int | None):
        self.pad_token_id = pad_token_id
        self.row_tokens = row_tokens

    def __call__(self, samples: list) -> dict:
        lengths = [len(s["input_ids"]) for s in samples]
        rows = [list(range(len(samples)))] if self.row_tokens is None else split_rows(lengths, self.row_tokens)
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for number, row in enumerate(rows):
            start = 0
            for position in row:
                sample, end = samples[position], start + lengths[position]
                input_ids[number, start:end] = sample["input_ids"]
                labels[number, start + 1:end] = sample["labels"][1:]  # no token predicts the next sample's first
                attention_mask[number, start:end] = 1
                position_ids[number, start:] = torch.arange(width - start)
                start = end
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "position_ids": position_ids, **image_fields(samples)}
