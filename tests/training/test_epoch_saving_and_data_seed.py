"""--save_strategy epoch saves at every epoch's end; --data_seed sets the data order apart from --seed."""
import os

import pytest
from train_helpers import flags, read_log, train_world

from llava_ln.train import main
from llava_ln.training.checkpointing import list_checkpoints


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def test_save_strategy_epoch_checkpoints_each_epoch(world, tmp_path):
    out = str(tmp_path / "epochs")
    # 8 records, batch 2: 4 steps per epoch; the last epoch's end is the run folder itself.
    assert main(flags(world, out, max_steps=-1, num_train_epochs=3, save_steps=None, save_strategy="epoch")) == 0
    assert [step for step, _ in list_checkpoints(out)] == [4, 8]


def _first_loss(world, out, **extra) -> float:
    assert main(flags(world, out, max_steps=1, save_steps=None, save_strategy="no", **extra)) == 0
    return read_log(out)[1]["loss"]


def test_data_seed_orders_the_data_and_defaults_to_seed(world, tmp_path):
    by_seed = _first_loss(world, os.path.join(tmp_path, "seed"))  # --seed 7
    same = _first_loss(world, os.path.join(tmp_path, "data_seed_7"), data_seed=7)
    other = _first_loss(world, os.path.join(tmp_path, "data_seed_1"), data_seed=1)
    assert by_seed == same and other != by_seed
