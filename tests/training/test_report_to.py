"""Reporting: a --report_to target whose package is missing is refused in one line before any work (no model
built, no data indexed, no run folder created); a run ends with one summary line."""
import importlib.util
import os
import re

import pytest
from train_helpers import flags, stage1_run, stage1_stdout, train_world

import llava_ln.train as train_entry
from llava_ln.cli import main as cli_main


@pytest.fixture
def no_wandb(monkeypatch):
    """An environment without wandb, whatever this one has installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "wandb" else real(name, *a, **k))


def test_report_to_wandb_without_wandb_is_refused_before_the_model_is_built(tmp_path, tmp_path_factory, tiny_llm,
                                                                             tiny_vision, capsys, monkeypatch, no_wandb):
    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    out = str(tmp_path / "run")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was built although --report_to was refused")

    monkeypatch.setattr(train_entry, "build_training_model", must_not_run)
    monkeypatch.setattr(train_entry, "load_data_components", must_not_run)
    assert cli_main(["train", *flags(world, out), "--report_to", "tensorboard,wandb"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after what building the tiny backbones printed
    assert err == ("llava-ln: error: --report_to wandb needs the wandb package, which is not installed (pip install "
                   "wandb); or leave it out of --report_to")
    assert not os.path.exists(out)


def test_train_ends_with_one_summary_line(tmp_path_factory, tiny_llm, tiny_vision):
    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    run = stage1_run(world)
    last = stage1_stdout(world).strip().splitlines()[-1]
    assert re.fullmatch(rf"train: done: 4 steps in \dm\d\ds, final loss \d+\.\d{{4}}; run folder {re.escape(run)}; "
                        rf"TensorBoard {re.escape(os.path.join(run, 'runs'))}", last), last
