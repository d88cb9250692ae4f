"""Non-finite losses and gradients: a step is skipped (no update) with a warning, too many in a row stop the run
with one line, and nothing non-finite is ever written (torch strategy in-process; DeepSpeed in tests/reliability)."""
import json
import logging
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import flags, read_log, stage1_run, train_world, trained

import llava_ln.training.strategy as strategy_module
from llava_ln.core.distributed import DistContext
from llava_ln.train import main
from llava_ln.training.guards.step_guard import StepGuard, StepVerdict, TrainingDiverged
from llava_ln.training.strategy import StepOutcome


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _nan_losses_at(monkeypatch, steps: set):
    """The training forward returns NaN at these (1-based) micro-steps of this process."""
    real_forward = strategy_module.TrainingModule.forward
    calls = {"n": 0}

    def forward(self, batch):
        loss = real_forward(self, batch)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] in steps:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(strategy_module.TrainingModule, "forward", forward)


def _common(world) -> dict:
    return dict(tune_mode="ln_simple", norm_lr=5e-2, pretrain_mm_mlp_adapter=stage1_run(world), save_steps=1)


def _masters(checkpoint: str) -> dict:
    return load_file(os.path.join(checkpoint, "resume", "master.safetensors"))


def test_a_nan_step_is_skipped_and_the_run_resumes_exactly_past_it(world, tmp_path, monkeypatch, caplog):
    common = _common(world)
    stage1_run(world)
    out = str(tmp_path / "run")
    _nan_losses_at(monkeypatch, {3})
    logging.getLogger("llava_ln.training.guards.step_guard").addHandler(caplog.handler)  # llava_ln does not propagate
    try:
        assert main(flags(world, out, max_steps=5, **common)) == 0
    finally:
        logging.getLogger("llava_ln.training.guards.step_guard").removeHandler(caplog.handler)
    assert "step 3: the loss is not finite; step skipped, no update (1 in a row" in caplog.text
    # No update at step 3: the weights after it are those after step 2; then training goes on.
    before, after, later = (_masters(os.path.join(out, f"checkpoint-{s}")) for s in (2, 3, 4))
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert any(not torch.equal(after[n], later[n]) for n in after)
    log = read_log(out)
    assert math.isnan(log[3]["loss"]) and math.isnan(log[3]["grad_norm"]) and log[5]["skipped_steps"] == 1
    with open(os.path.join(out, "checkpoint-4", "resume", "trainer_state.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    assert (saved["state"]["skipped_steps"], saved["optimizer_steps"]) == (1, 3)  # Adam's own count did not move
    # Resuming after the skipped step lands on the same weights (the optimizer's step count carried over).
    monkeypatch.undo()
    resumed = str(tmp_path / "resumed")
    assert main(flags(world, resumed, max_steps=5, resume_from_checkpoint=os.path.join(out, "checkpoint-4"),
                      **common)) == 0
    for name, value in trained(out).items():
        assert torch.equal(trained(resumed)[name], value), name


def test_too_many_nan_steps_in_a_row_stop_the_run_naming_the_step(world, tmp_path, monkeypatch):
    common = _common(world)
    stage1_run(world)
    out = str(tmp_path / "run")
    _nan_losses_at(monkeypatch, {2, 3, 4, 5, 6})
    with pytest.raises(TrainingDiverged, match=r"^step 4: the loss is not finite, on 3 steps in a row "
                                               r"\(--max_nonfinite_steps 2\).*checkpoint-3, is intact"):
        main(flags(world, out, max_steps=6, max_nonfinite_steps=2, **common))
    assert TrainingDiverged.exit_code == 3
    assert not os.path.exists(os.path.join(out, "manifest.json"))  # no final weights
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2",
                                                                                 "checkpoint-3"]


def test_non_finite_weights_are_never_written(world, tmp_path, monkeypatch):
    """Whatever let them in (here: a corrupted update the guard could not see), a save refuses them."""
    common = _common(world)
    stage1_run(world)
    out = str(tmp_path / "run")
    real_step = strategy_module.TorchStrategy.optimizer_step
    calls = {"n": 0}

    def step_that_corrupts_the_third_update(self, *, skip=False):
        outcome = real_step(self, skip=skip)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.trainable[0].fill_(float("inf"))
        return outcome

    monkeypatch.setattr(strategy_module.TorchStrategy, "optimizer_step", step_that_corrupts_the_third_update)
    with pytest.raises(TrainingDiverged, match=r"refusing to write .*checkpoint-3: tensor .* holds non-finite values.*"
                                               r"checkpoint-2 is intact"):
        main(flags(world, out, max_steps=6, **common))
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-2", "log.jsonl", "optimizer_groups.json",
                                       "run_config.json", "trainable_parameters.txt"]  # no checkpoint-3, no .tmp-*


def _judge(guard: StepGuard, step: int, verdict: StepVerdict, outcome: StepOutcome) -> bool:
    return guard.after_step(step, verdict, outcome, last_checkpoint=None)


def test_an_update_applied_with_a_non_finite_gradient_stops_at_once():
    guard = StepGuard(DistContext(), max_nonfinite_steps=3)
    verdict = StepVerdict(nonfinite_loss=False, stop_signal=None)
    assert _judge(guard, 7, verdict, StepOutcome(grad_norm=1.0, applied=True)) is False
    dropped = StepOutcome(grad_norm=float("nan"), applied=False, dropped_nonfinite=True)
    assert _judge(guard, 8, verdict, dropped) is True
    with pytest.raises(TrainingDiverged, match=r"step 9: the gradient norm \(inf\) .* applied the update anyway"):
        _judge(guard, 9, verdict, StepOutcome(grad_norm=float("inf"), applied=True, applied_nonfinite=True))


def test_fp16_overflow_skips_are_routine_and_a_good_step_resets_the_count():
    guard = StepGuard(DistContext(), max_nonfinite_steps=1)
    finite = StepVerdict(nonfinite_loss=False, stop_signal=None)
    overflow = StepOutcome(grad_norm=float("inf"), applied=False)  # the loss scaler dropped it (finite loss)
    for step in range(5):  # not counted
        assert _judge(guard, step, finite, overflow) is False
    bad = StepVerdict(nonfinite_loss=True, stop_signal=None)
    skipped = StepOutcome(grad_norm=float("nan"), applied=False)
    assert _judge(guard, 10, bad, skipped) is True
    assert _judge(guard, 11, finite, StepOutcome(grad_norm=1.0, applied=True)) is False
    assert _judge(guard, 12, bad, skipped) is True
    with pytest.raises(TrainingDiverged, match="step 13"):
        _judge(guard, 13, bad, skipped)


def test_the_verdict_counts_non_finite_micro_losses_and_pending_stop_signals():
    class Pending:
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

        def pending(self, signum: int) -> int:
            return int(signum in (signal.SIGTERM, signal.SIGHUP))

    assert StepGuard(DistContext(), max_nonfinite_steps=0).before_step([0.5, 1.0]) == StepVerdict(False, None)
    verdict = StepGuard(DistContext(), max_nonfinite_steps=0, stops=Pending()).before_step([0.5, float("nan")])
    assert verdict == StepVerdict(nonfinite_loss=True, stop_signal=signal.SIGTERM)  # SIGTERM first of two
