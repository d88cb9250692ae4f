"""Packed micro-batches: the token-budget packer, the packed row, and the exact sample lengths they use."""
import threading

import numpy as np
import pytest
import torch
from data_helpers import image_record, make_dataset, record, save_image, write_json

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.packing import PackedCollator, TokenBudgetPacker, split_rows
from llava_ln.model.backbones import load_tokenizer
from llava_ln.training.data_order import DataOrder

LENGTHS = np.random.default_rng(3).integers(5, 300, size=500)


def test_every_sample_once_each_micro_batch_within_the_budget():
    for one_row in (True, False):
        packer = TokenBudgetPacker(LENGTHS, 512, seed=1, one_row=one_row)
        for epoch in range(3):
            batches = packer.batches(epoch)
            assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
            assert max(LENGTHS[b].sum() for b in batches) <= 512
    # One row per micro-batch (FlashAttention): almost every one is full, under 1% of the budget unused here.
    batches = TokenBudgetPacker(LENGTHS, 512, seed=1, one_row=True).batches(0)
    assert LENGTHS.sum() / (len(batches) * 512) > 0.99


def test_rows_of_like_length_keep_padding_and_attention_small():
    packer = TokenBudgetPacker(LENGTHS, 1024, seed=1)
    assert packer.row_tokens == int(np.median(LENGTHS))
    for batch in packer.batches(0):
        lengths = LENGTHS[batch]
        rows = split_rows(lengths.tolist(), packer.row_tokens)
        widths = [lengths[row].sum() for row in rows]
        assert len(rows) * max(widths) <= 1024  # the budget counts padding too
        # A row of several samples stays within the median length; a longer sample is a row of its own.
        assert all(len(row) == 1 or width <= packer.row_tokens for row, width in zip(rows, widths))
    tokens, computed = packer.computed_tokens()
    assert tokens == LENGTHS.sum() and computed - tokens < 0.03 * computed  # padding: under 3% here


def test_the_order_is_a_function_of_seed_and_epoch_with_a_fixed_count():
    packer = TokenBudgetPacker(LENGTHS, 512, seed=1)
    assert packer.batches(4) == TokenBudgetPacker(LENGTHS, 512, seed=1).batches(4)
    assert packer.batches(4) != packer.batches(5)
    assert packer.batches(4) != TokenBudgetPacker(LENGTHS, 512, seed=2).batches(4)
    assert len({len(packer.batches(epoch)) for epoch in range(6)}) == 1  # what DataOrder's step count needs


def test_data_order_gives_every_rank_the_same_number_of_packed_micro_batches():
    packer = TokenBudgetPacker(LENGTHS, 512, seed=1)
    order = DataOrder(dataset_size=len(LENGTHS), batch_size=1, world_size=2, accumulation=3, seed=1, packer=packer)
    ranks = [order.rank_batches(0, rank, 0) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == order.steps_per_epoch() * 3
    # One process with accumulation 6 reads, per step, exactly what the two ranks read together.
    single = DataOrder(dataset_size=len(LENGTHS), batch_size=1, world_size=1, accumulation=6, seed=1, packer=packer)
    step = single.rank_batches(0, 0, 2)[:6]
    assert sorted(map(tuple, step)) == sorted(map(tuple, ranks[0][6:9] + ranks[1][6:9]))
    assert order.rank_batches(0, 1, 2) == ranks[1][6:]  # resuming at step 2 reads the rest, unchanged


def test_a_sample_longer_than_the_budget_is_refused_by_name():
    with pytest.raises(LlavaLnError, match=r"^data.json: record 'long' \(#1\): 300 tokens, more than "
                                           r"--max_tokens_per_batch 256"):
        TokenBudgetPacker([10, 300], 256, seed=0, describe_sample=lambda i: f"data.json: record 'long' (#{i})")


def test_the_packed_row_restarts_positions_and_masks_each_boundary():
    samples = [
        {"id": "a", "input_ids": torch.tensor([1, 7, 8]), "labels": torch.tensor([1, 7, 8]),
         "pixel_values": torch.zeros(1, 3, 4, 4)},
        {"id": "b", "input_ids": torch.tensor([1, 9]), "labels": torch.tensor([5, 9]), "pixel_values": None},
        {"id": "c", "input_ids": torch.tensor([2, 3, 4, 5]), "labels": torch.tensor([2, 3, -100, 5]),
         "pixel_values": torch.ones(2, 3, 4, 4)},
    ]
    batch = PackedCollator(pad_token_id=0, row_tokens=9)(samples)
    assert batch["input_ids"].tolist() == [[1, 7, 8, 1, 9, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX, 9, IGNORE_INDEX, 3, IGNORE_INDEX, 5]]
    assert batch["attention_mask"].tolist() == [[1] * 9]
    assert batch["image_counts"].tolist() == [1, 0, 2] and batch["sample_ids"] == ["a", "b", "c"]
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [0.0, 1.0, 1.0]  # images in sample order
    assert samples[1]["labels"].tolist() == [5, 9]  # the samples themselves are not changed

    rows = PackedCollator(pad_token_id=0, row_tokens=5)(samples)  # rows of at most 5 tokens: [a, b] and [c]
    assert rows["input_ids"].tolist() == [[1, 7, 8, 1, 9], [2, 3, 4, 5, 0]]
    assert rows["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]]  # padding continues its row
    assert rows["labels"].tolist() == [[IGNORE_INDEX, 7, 8, IGNORE_INDEX, 9], [IGNORE_INDEX, 3, IGNORE_INDEX, 5,
                                                                                IGNORE_INDEX]]
    assert rows["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]


def test_under_flash_attention_a_micro_batch_stays_one_row_past_the_budget():
    """A sample replaced when read (an unreadable image) can push a micro-batch past the budget; FlashAttention
    keeps packed samples apart only in a batch of one row, so the collator never splits it."""
    from types import SimpleNamespace

    from llava_ln.training.packing import collator_for

    samples = [{"id": str(n), "input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1),
                "pixel_values": None} for n in (6, 5)]
    packer = TokenBudgetPacker([6, 4], 10, seed=0, one_row=True)  # measured 6 + 4; the 4 was replaced by a 5
    batch = collator_for(SimpleNamespace(packing=True), None, pad_token_id=0, packer=packer)(samples)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]]
    rows = collator_for(SimpleNamespace(packing=True), None, pad_token_id=0,
                        packer=TokenBudgetPacker([6, 4], 10, seed=0))(samples)  # sdpa: rows of the median, 5
    assert rows["input_ids"].shape == (2, 6)


def test_token_lengths_are_those_of_the_samples_read(bpe_tokenizer_dir, tiny_vision, tmp_path):
    tokenizer = load_tokenizer(bpe_tokenizer_dir)
    save_image(str(tmp_path / "ok.png"))
    path = write_json(str(tmp_path / "data.json"), [
        image_record("img", "ok.png"), record("short", "Hi?", "Hello."),
        record("truncated", " ".join(["describe the scene in detail please"] * 30), "yes"),  # replaced when read
        record("two-turns", "How many?", "Two.", "And colours?", "Red and blue."),
    ])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), model_max_length=400)
    lengths = dataset.token_lengths()
    assert lengths.tolist() == [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    assert lengths[2] == lengths[3] and dataset[2]["id"] == "two-turns"



def test_a_sample_over_the_budget_is_named_as_the_record_read(bpe_tokenizer_dir, tiny_vision, tmp_path):
    """A record skipped when measured counts the length of the one read in its place; refused over the budget,
    that length is named by the record it belongs to, not by the skipped one before it."""
    from llava_ln.training.packing import build_packer

    path = write_json(str(tmp_path / "data.json"), [
        record("short", "Hi?", "Hello."),
        record("truncated", " ".join(["describe the scene in detail please"] * 30), "yes"),  # skipped: too long
        record("long", " ".join(["describe the scene"] * 12), "Red and blue."),
    ])
    dataset = make_dataset(path, load_tokenizer(bpe_tokenizer_dir), tiny_vision("clip"), model_max_length=400)
    lengths = dataset.token_lengths()
    assert lengths[1] == lengths[2] > lengths[0]
    with pytest.raises(LlavaLnError, match=rf"data.json: record 'long' \(#2\): {lengths[2]} tokens, more than"):
        build_packer(dataset, int(lengths[0]) + 1, seed=0, one_row=False)


class _ThreadRanks:
    """Ranks as threads of this process: the collectives token_lengths uses, exchanged through a barrier (a rank
    that never arrives breaks it after a few seconds instead of hanging the test)."""

    def __init__(self, size: int):
        self.barrier = threading.Barrier(size, timeout=5)
        self.slots = [None] * size

    def all_gather_objects(self, context, obj):
        self.slots[context.rank] = obj
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return gathered

    def all_reduce_sum_int64(self, context, values):
        return sum(self.all_gather_objects(context, values))

    def run(self, work) -> list:
        """work(rank) on every rank at once; what each returned or raised."""
        outcomes = [None] * len(self.slots)

        def one(rank):
            try:
                outcomes[rank] = work(rank)
            except Exception as err:  # noqa: BLE001 - the outcome under test
                outcomes[rank] = err

        threads = [threading.Thread(target=one, args=(rank,)) for rank in range(len(self.slots))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes


def test_a_record_refused_on_one_rank_is_refused_on_every_rank(bpe_tokenizer_dir, tiny_vision, tmp_path,
                                                                monkeypatch):
    """Each of two ranks measures every second record. The rank that meets a refused record (as one the tokenizer
    rejects is) says so, and the other says the same instead of waiting in the sum for a rank that has left."""
    import llava_ln.data.dataset as dataset_module
    from llava_ln.core.distributed import DistContext

    path = write_json(str(tmp_path / "data.json"), [record(f"r{i}", "Hi?", "Hello.") for i in range(4)])
    tokenizer = load_tokenizer(bpe_tokenizer_dir)
    datasets = [make_dataset(path, tokenizer, tiny_vision("clip")) for _ in range(2)]
    ranks = _ThreadRanks(2)
    monkeypatch.setattr(dataset_module, "all_gather_objects", ranks.all_gather_objects, raising=False)
    monkeypatch.setattr(dataset_module, "all_reduce_sum_int64", ranks.all_reduce_sum_int64)
    process = dataset_module.LlavaDataset.process

    def refusing(self, index):
        if index == 3:  # the second record of rank 1's share
            raise LlavaLnError(f"{self.index.where(index, 'r3')}: the tokenizer rejects this record")
        return process(self, index)

    monkeypatch.setattr(dataset_module.LlavaDataset, "process", refusing)
    refused = ranks.run(lambda rank: datasets[rank].token_lengths(DistContext(rank=rank, world_size=2,
                                                                               backend="gloo")))
    for outcome in refused:
        assert isinstance(outcome, LlavaLnError), outcome
        assert str(outcome).endswith("data.json: record 'r3' (#3): the tokenizer rejects this record"), outcome
    monkeypatch.setattr(dataset_module.LlavaDataset, "process", process)  # without the refusal: every length, each
    measured = ranks.run(lambda rank: datasets[rank].token_lengths(DistContext(rank=rank, world_size=2,
                                                                                backend="gloo")))
    assert measured[0].tolist() == measured[1].tolist() == datasets[0].token_lengths().tolist()
