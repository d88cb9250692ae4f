"""SIGTERM / SIGINT / SIGUSR1: finish the step, write a checkpoint, say where in one line, exit 128+signal; resume is
exact.

In-process (the signal goes to this very process); real processes and launchers: tests/reliability.
"""
import os
import signal

import pytest
import torch
from train_helpers import flags, stage1_run, train_world, trained

import llava_ln.train as train_module
import llava_ln.training.strategy as strategy_module
from llava_ln.core.errors import run_command
from llava_ln.train import main
from llava_ln.training.guards.stop_signals import Interrupted


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


@pytest.fixture(scope="module")
def straight(world, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("signals") / "straight")
    assert main(flags(world, out, **_common(world))) == 0
    return out


def _common(world) -> dict:
    return dict(tune_mode="ln_simple", norm_lr=5e-2, pretrain_mm_mlp_adapter=stage1_run(world), max_steps=5,
                save_steps=2)


def _signal_at_micro_step(monkeypatch, signum: int, step: int, times: int = 1):
    real_forward = strategy_module.TrainingModule.forward
    calls = {"n": 0}

    def forward(self, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            for _ in range(times if calls["n"] == step else 0):
                os.kill(os.getpid(), signum)
        return real_forward(self, batch)

    monkeypatch.setattr(strategy_module.TrainingModule, "forward", forward)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_a_stop_signal_finishes_the_step_checkpoints_and_resumes_exactly(world, straight, tmp_path, monkeypatch,
                                                                         capfd, signum, code):
    out = str(tmp_path / "run")
    before = signal.getsignal(signum)
    _signal_at_micro_step(monkeypatch, signum, 3)
    assert run_command(main, flags(world, out, **_common(world))) == code
    name = signal.Signals(signum).name
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("llava-ln: ")]
    assert lines == [f"llava-ln: {name} received: finishing this optimizer step, then writing a checkpoint",
                     f"llava-ln: stopped: {name} after step 3: checkpoint {out}/checkpoint-3 written; continue with "
                     "--resume_from_checkpoint latest"]
    assert signal.getsignal(signum) is before  # the handlers are the run's only
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-3"]
    monkeypatch.undo()
    assert main(flags(world, out, resume_from_checkpoint="latest", **_common(world))) == 0
    for tensor_name, value in trained(straight).items():
        assert torch.equal(trained(out)[tensor_name], value), tensor_name


def test_repeated_signals_are_ignored_but_a_second_ctrl_c_stops_at_once(world, tmp_path, monkeypatch):
    out, common = str(tmp_path / "run"), _common(world)
    # SIGTERM twice (a launcher forwards the scheduler's): one checkpoint, one stop.
    _signal_at_micro_step(monkeypatch, signal.SIGTERM, 2, times=2)
    with pytest.raises(Interrupted, match="after step 2"):
        main(flags(world, out, **common))
    monkeypatch.undo()
    _signal_at_micro_step(monkeypatch, signal.SIGINT, 2, times=2)
    with pytest.raises(KeyboardInterrupt):
        main(flags(world, str(tmp_path / "again"), **common))


def test_a_signal_while_setting_up_stops_at_once(world, tmp_path, monkeypatch, capsys):
    common = _common(world)  # the stage-1 run first, unpatched
    real_build = train_module.build_training_model

    def build_then_get_signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(train_module, "build_training_model", build_then_get_signalled)
    assert run_command(main, flags(world, str(tmp_path / "run"), **common)) == 143
    assert capsys.readouterr().err.splitlines()[-1] == ("llava-ln: stopped: SIGTERM while the run was being set up: "
                                                        "nothing to save")


def test_a_signal_during_the_final_save_lets_it_finish(world, tmp_path, monkeypatch):
    import llava_ln.training.checkpointing as checkpointing

    common = _common(world)
    out = str(tmp_path / "run")
    real_save_run = checkpointing.save_run

    def save_run_then_get_signalled(directory, *args, **kwargs):
        if directory == out:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save_run(directory, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_run", save_run_then_get_signalled)
    assert main(flags(world, out, **common)) == 0
    assert os.path.exists(os.path.join(out, "manifest.json"))
