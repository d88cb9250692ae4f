"""--log_grad_stats: per-group gradient norms before clipping in log.jsonl, the same under PyTorch and DeepSpeed."""
import json
import os
import subprocess
import sys

import pytest
from train_helpers import flags, stage1_run, train_world

from llava_ln.train import main

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
    assert main(flags(world, out, max_steps=1, logging_steps=1, save_steps=0)) == 0
    assert "grad_stats" not in _lines(out)[0] and _lines(out)[0]["peak_memory_gib"] > 0


@pytest.mark.slow
def test_deepspeed_grad_stats_match_plain_pytorch(world, tmp_path):
    """ZeRO partitions gradients; safe_get_full_grad reassembles them, so step 1 (same weights, same batch)
    gives the same per-group norms as the plain PyTorch run."""
    common = dict(max_steps=1, logging_steps=1, save_steps=0, log_grad_stats=True,
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
