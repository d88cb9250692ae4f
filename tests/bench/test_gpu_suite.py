"""bench/gpu_suite.sh --dry_run: every step of the GPU suite runs on the CPU and its summary says what happened.

The GPU suite is run once per lent GPU, where a broken step costs scarce device time; this runs
the very same script and steps at tiny size (fp32, DeepSpeed over gloo, no wheel install) so a
change that breaks a step, a fact check or the summary's shape shows up here first.
"""
import json
import os
import subprocess
import sys
import tarfile

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["toy_world", "zero2_stage1", "zero2_stage2", "zero2_resume", "zero3_stage1", "zero3_stage2",
         "zero3_resume", "eval_pope", "eval_vqav2", "export_hf", "throughput_llava_ln", "throughput_baseline"]
TUNE_MODES = {"ln_simple", "connector", "ln", "lora", "full", "attn_qv", "attn_mlp"}
BASELINE_MODES = {"ln_simple", "connector", "ln", "lora", "full"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_suite")
    work, out = root / "work", root / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SUITE_WORK": str(work), "OUT": str(out)}
    done = subprocess.run(["bash", "bench/gpu_suite.sh", "--dry_run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    return done, work, out


def test_every_step_runs_and_passes_on_the_cpu(dry_run):
    done, work, _ = dry_run
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-2] == "=== gpu_suite summary ===", done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(lines[-1])
    failed = {n: r.get("reason") or r.get("problems") for n, r in summary["steps"].items() if r["status"] != "passed"}
    assert not failed and done.returncode == 0, failed
    assert list(summary["steps"]) == STEPS
    assert summary["passed"] is True and summary["counts"] == {"passed": len(STEPS), "failed": 0, "skipped": 0}
    assert summary["profile"] == "dry_run" and summary["install"]["status"] == "skipped"
    with open(work / "gpu_suite.json", encoding="utf-8") as handle:
        assert json.load(handle) == summary


def test_training_steps_ran_under_deepspeed_and_resumed_exactly(dry_run):
    steps = json.loads(dry_run[0].stdout.strip().splitlines()[-1])["steps"]
    for zero in (2, 3):
        for stage in ("stage1", "stage2"):
            facts = steps[f"zero{zero}_{stage}"]
            assert (facts["strategy"], facts["zero_stage"], facts["precision"], facts["device"]) == \
                ("DeepSpeedStrategy", zero, "fp32", "cpu")
            assert facts["trained_tensors"] > 0
        assert steps[f"zero{zero}_stage2"]["mid_run_checkpoint"] is True
        resume = steps[f"zero{zero}_resume"]
        assert resume["bit_identical"] is True and resume["max_abs_diff"] == 0.0 and resume["losses_compared"] > 0
    # stage 1 trains the connector alone, stage 2 (ln) norms + connector + embeddings + head
    assert steps["zero2_stage1"]["trained_tensors"] < steps["zero2_stage2"]["trained_tensors"]


def test_eval_export_and_throughput_facts(dry_run):
    summary = json.loads(dry_run[0].stdout.strip().splitlines()[-1])
    steps = summary["steps"]
    for bench in ("pope", "vqav2"):
        assert steps[f"eval_{bench}"]["answered"] == steps[f"eval_{bench}"]["questions"] > 0
        assert steps[f"eval_{bench}"]["batch_size"] == 16
    assert 0.0 <= steps["eval_pope"]["mean_f1"] <= 1.0 and 0.0 <= steps["eval_vqav2"]["overall"] <= 100.0
    assert "verified with transformers" in steps["export_hf"]["verified"]
    rows = {row["mode"]: row for row in summary["throughput_table"]}
    assert set(rows) == TUNE_MODES
    assert all(rows[m]["llava_ln_tokens_per_s"] > 0 for m in TUNE_MODES)
    assert all(rows[m]["baseline_tokens_per_s"] > 0 and rows[m]["speedup"] > 0 for m in BASELINE_MODES)


def test_results_for_the_device_tool_fit_its_limits(dry_run):
    _, _, out = dry_run
    names = sorted(os.listdir(out))
    assert names == ["gpu_suite.json", "gpu_suite_logs.tar.gz", "throughput_baseline.jsonl",
                     "throughput_llava_ln.jsonl"]
    assert all(os.path.getsize(out / n) < 16 * 2**20 for n in names)  # at most 8 files of 16 MiB come back
    with tarfile.open(out / "gpu_suite_logs.tar.gz") as archive:
        members = set(archive.getnames())
    assert {f"logs/{step}.err" for step in STEPS} <= members
    assert "runs/zero3_resumed/log.jsonl" in members
