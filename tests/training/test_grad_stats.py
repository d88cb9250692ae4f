"""--log_grad_stats: per-group gradient norms before clipping in log.jsonl, the same under PyTorch and DeepSpeed."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import flags, stage1_run, train_world

import llava_ln.training.strategy as strategy_module
from llava_ln.train import main
from llava_ln.training.grad_stats import GradStatsWindow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZERO = {stage: os.path.join(REPO, "zero_configs", f"zero{stage}.json") for stage in (2, 3)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm, tiny_vision):
    return train_world(tmp_path_factory, tiny_llm, tiny_vision)


def _lines(directory: str) -> list:
    with open(os.path.join(directory, "log.jsonl"), encoding="utf-8") as handle:
        return [r for r in map(json.loads, handle) if "loss" in r]


def _groups(directory: str) -> set:
    with open(os.path.join(directory, "optimizer_groups.json"), encoding="utf-8") as handle:
        return {group["name"] for group in json.load(handle)}


def test_grad_stats_are_logged_per_group_before_clipping(world, tmp_path):
    out = str(tmp_path / "run")
    # Clipping to 1e-6: a norm measured after clipping could not exceed it.
    assert main(flags(world, out, max_steps=4, logging_steps=2, log_grad_stats=True, max_grad_norm=1e-6,
                      pretrain_mm_mlp_adapter=stage1_run(world))) == 0
    lines = _lines(out)
    assert [r["step"] for r in lines] == [2, 4]
    for record in lines:
        stats = record["grad_stats"]
        assert set(stats) == _groups(out) | {"all"}
        for values in stats.values():
            assert len(values["norms"]) == 2  # one per optimizer step of the window
            mean = sum(values["norms"]) / 2
            assert values["mean"] == pytest.approx(mean)
            assert values["var"] == pytest.approx(sum((n - mean) ** 2 for n in values["norms"]) / 2)
        # "all" is the global norm clip_grad_norm_ saw, and it is far above the clipping threshold.
        assert stats["all"]["mean"] == pytest.approx(record["grad_norm"], rel=1e-5)
        assert min(stats["all"]["norms"]) > 1e-3
        squares = sum(stats[g]["norms"][0] ** 2 for g in stats if g != "all")
        assert stats["all"]["norms"][0] == pytest.approx(squares ** 0.5, rel=1e-6)


def test_no_grad_stats_without_the_flag(world, tmp_path):
    out = str(tmp_path / "plain")
    assert main(flags(world, out, max_steps=1, logging_steps=1, save_strategy="no")) == 0
    assert "grad_stats" not in _lines(out)[0] and _lines(out)[0]["peak_memory_gib"] > 0


@pytest.mark.slow
def test_deepspeed_grad_stats_match_plain_pytorch(world, tmp_path):
    """ZeRO partitions gradients; safe_get_full_grad reassembles them, so step 1 (same weights, same batch)
    gives the same per-group norms as the plain PyTorch run."""
    common = dict(max_steps=1, logging_steps=1, save_strategy="no", log_grad_stats=True,
                  pretrain_mm_mlp_adapter=stage1_run(world))
    reference = str(tmp_path / "torch")
    assert main(flags(world, reference, **common)) == 0
    runs = {stage: str(tmp_path / f"zero{stage}") for stage in ZERO}
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps([flags(world, out, deepspeed=ZERO[stage], **common) for stage, out in runs.items()]))
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "support", "run_trainings.py"), str(spec)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    expected = _lines(reference)[0]["grad_stats"]
    for stage, out in runs.items():
        got = _lines(out)[0]["grad_stats"]
        assert set(got) == set(expected), stage
        for group in expected:
            assert got[group]["norms"][0] == pytest.approx(expected[group]["norms"][0], rel=1e-4), (stage, group)


def test_a_step_with_a_non_finite_gradient_norm_is_left_out_of_the_window():
    """The step guard skips such a step (no update); one inf would make the window's variance inf."""
    window = GradStatsWindow()
    window.add({"norms": 3.0, "connector": 4.0})
    window.add({"norms": float("inf"), "connector": 1.0})
    window.add({"norms": 0.0, "connector": 5.0})
    stats = window.record()["grad_stats"]
    assert stats["all"]["norms"] == [5.0, 5.0] and stats["all"]["var"] == 0.0
    assert stats["norms"]["norms"] == [3.0, 0.0] and stats["norms"]["var"] == 2.25


def test_a_skipped_nan_step_has_no_grad_stats_and_the_others_stay_finite(world, tmp_path, monkeypatch):
    real_forward = strategy_module.TrainingModule.forward
    calls = {"n": 0}

    def nan_at_third_micro_step(self, batch):
        loss = real_forward(self, batch)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(strategy_module.TrainingModule, "forward", nan_at_third_micro_step)
    out = str(tmp_path / "run")
    assert main(flags(world, out, tune_mode="ln_simple", pretrain_mm_mlp_adapter=stage1_run(world), max_steps=4,
                      log_grad_stats=True)) == 0
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as handle:
        records = {r["step"]: r for r in map(json.loads, handle) if "loss" in r}
    assert "grad_stats" not in records[3]
    for step in (1, 2, 4):
        assert all(math.isfinite(v) for group in records[step]["grad_stats"].values() for v in group["norms"]), step
