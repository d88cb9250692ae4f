"""--group_by_modality_length: modality-pure batches, length grouping, determinism per (seed, epoch)."""
import numpy as np
import pytest
from data_helpers import image_record, make_dataset, record, save_image, write_json
from torch.utils.data import DataLoader

from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import build_train_sampler
from llava_ln.data.encode import DataCollator
from llava_ln.data.index import ModalityLengthGroupedSampler
from llava_ln.model.backbones import load_tokenizer


def _toy(n=103, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(5, 500, size=n), rng.random(n) < 0.6


@pytest.mark.parametrize("world_size", [1, 2])
def test_batches_are_modality_pure_and_cover_everything(world_size):
    lengths, has_image = _toy()
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, world_size=world_size, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler)
    assert set(order) == set(range(len(lengths)))
    repeats = len(order) - len(lengths)
    assert 0 <= repeats <= 2 * (4 - 1)  # at most batch_size - 1 top-ups per modality
    for start in range(0, len(order), 4):  # consecutive runs of batch_size, as a DataLoader cuts them
        batch = order[start:start + 4]
        assert len(set(has_image[batch])) == 1


def test_megabatches_are_sorted_by_length():
    lengths, has_image = _toy(n=64)
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, world_size=2, seed=0)
    batches = list(sampler.batches())
    # Inside a megabatch the two devices' batches come longest first.
    spreads = [lengths[b].max() - lengths[b].min() for b in batches]
    random_spreads = [np.ptp(lengths[np.random.default_rng(i).choice(64, 4, replace=False)]) for i in range(len(batches))]
    assert np.mean(spreads) < np.mean(random_spreads)


def test_order_depends_only_on_seed_and_epoch():
    lengths, has_image = _toy()

    def order(seed, epoch):
        sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)


def test_data_loader_batches_through_the_dataset(bpe_tokenizer_dir, tiny_vision, tmp_path):
    tokenizer = load_tokenizer(bpe_tokenizer_dir)
    save_image(str(tmp_path / "a.png"))
    records = [image_record(f"i{k}", "a.png", answer="yes " * (k + 1)) if k % 3 else record(f"t{k}", "q?", "a " * k)
               for k in range(1, 15)]
    path = write_json(str(tmp_path / "data.json"), records)
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), group_by_modality_length=True)
    sampler = build_train_sampler(dataset, DataArguments(group_by_modality_length=True), batch_size=3, world_size=1,
                                  seed=0)
    assert build_train_sampler(dataset, DataArguments(), batch_size=3, world_size=1, seed=0) is None
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=DataCollator(tokenizer))
    kinds = []
    for batch in loader:
        counts = batch["image_counts"].tolist()
        assert all(c > 0 for c in counts) or all(c == 0 for c in counts)
        assert (batch["pixel_values"] is None) == (counts[0] == 0)
        kinds.append(counts[0] > 0)
    assert set(kinds) == {True, False}
