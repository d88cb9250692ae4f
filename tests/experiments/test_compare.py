"""llava-ln compare end to end on a tiny toy world: two modes, killed while the second trains, restarted.

The restart must reuse the finished mode untouched (same trained tensors, one training attempt), resume the
killed one from its checkpoint, and then write the comparison and its plots; analyze reads the runs back.
"""
import glob
import json
import os
import subprocess
import sys
import time

import pytest
from eval_helpers import toy_assets
from process_helpers import kill_tree

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_assets(tmp_path_factory)["world"]


def _compare(world: str, out: str) -> list:
    return [sys.executable, "-m", "llava_ln.cli", "compare", "--world", world, "--modes", "ln,lora",
            "--stage1_steps", "4", "--stage2_steps", "16", "--per_device_train_batch_size", "2",
            "--benchmarks", "pope,vqav2", "--output_dir", out, "--save_steps", "2", "--logging_steps", "2",
            "--curve_benchmarks", "pope", "--curve_steps", "0.5", "--curve_limit", "6", "--eval_batch_size", "16",
            "--threads", "1"]


def _status(out: str, name: str) -> dict:
    with open(os.path.join(out, name, "status.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _kill_when_checkpointed(command: list, pattern: str, timeout: float = 900) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not glob.glob(pattern):
        if process.poll() is not None:
            pytest.fail("compare ended before the second mode checkpointed: " + process.stderr.read().decode()[-3000:])
        if time.time() > deadline:
            kill_tree(process.pid)
            pytest.fail("no checkpoint of the second mode in time")
        time.sleep(0.1)
    kill_tree(process.pid)  # the driver and the training child (a process group of its own) at once
    process.wait()


def test_compare_two_modes_killed_and_restarted(world, tmp_path):
    out = str(tmp_path / "compare")
    _kill_when_checkpointed(_compare(world, out), os.path.join(out, "lora", "run", "checkpoint-*"))

    assert _status(out, "ln")["state"] == "trained" and _status(out, "lora")["state"] == "training"
    with open(os.path.join(out, "comparison.json"), encoding="utf-8") as handle:
        assert list(json.load(handle)["modes"]) == ["ln"]  # written after each finished run
    ln_tensors = os.path.join(out, "ln", "run", "trained.safetensors")
    ln_mtime = os.stat(ln_tensors).st_mtime_ns
    checkpoint = os.path.basename(sorted(glob.glob(os.path.join(out, "lora", "run", "checkpoint-*")))[-1])

    done = subprocess.run(_compare(world, out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    # ln untouched; lora resumed from its checkpoint and finished.
    assert os.stat(ln_tensors).st_mtime_ns == ln_mtime
    assert len(_status(out, "ln")["attempts"]) == 1 and len(_status(out, "stage1")["attempts"]) == 1
    attempts = _status(out, "lora")["attempts"]
    assert [a["resumed_from"] for a in attempts] == [None, checkpoint] and "seconds" in attempts[1]
    with open(os.path.join(out, "lora", "run", "log.jsonl"), encoding="utf-8") as handle:
        steps = [r["step"] for r in map(json.loads, handle) if "loss" in r]
    assert steps[-1] == 16 and int(checkpoint.split("-")[1]) + 2 in steps
    assert "resumed from" in open(os.path.join(out, "lora", "train.log"), encoding="utf-8").read()

    with open(os.path.join(out, "comparison.json"), encoding="utf-8") as handle:
        comparison = json.load(handle)
    assert comparison["settings"]["this_invocation"]["outcomes"] == {"stage1": "reused", "ln": "reused",
                                                                     "lora": "resumed"}
    assert list(comparison["modes"]) == ["ln", "lora"]
    for name, entry in comparison["modes"].items():
        for key in ("trainable", "trainable_pct", "scores", "average", "peak_memory_gib", "wall_s", "tokens_per_s",
                    "run_dir"):
            assert entry[key] is not None, (name, key)
        assert set(entry["scores"]) == {"pope", "vqav2"} and os.path.isdir(entry["run_dir"])
    assert comparison["modes"]["ln"]["trainable"] != comparison["modes"]["lora"]["trainable"]
    table = open(os.path.join(out, "comparison.md"), encoding="utf-8").read()
    assert "| ln | ln |" in table and "| lora | lora |" in table
    for name in ("score_vs_trainable", "memory_time", "learning_curves"):
        path = os.path.join(out, f"{name}.png")
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG
        assert os.path.getsize(path) > 5000

    # analyze: similarity of both runs, their gradient statistics, its plots.
    analysis_dir = str(tmp_path / "analysis")
    done = subprocess.run([sys.executable, "-m", "llava_ln.cli", "analyze", "--json", "--output_dir", analysis_dir,
                           "--checkpoints", f"ln={out}/ln/run,lora={out}/lora/run", "--num_samples", "4",
                           "--data", os.path.join(world, "data", "instruct_conversation.json"),
                           "--image_folder", os.path.join(world, "images")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for label in ("ln", "lora"):
        similarity = result["layer_similarity"][label]
        assert -1 <= similarity["all_pairs"] <= 1 and similarity["samples"] == 4
        assert result["grad_stats"][label]["all"]["steps"] == 16
    for name in ("layer_similarity", "grad_stats"):
        with open(os.path.join(analysis_dir, f"{name}.png"), "rb") as handle:
            assert handle.read(8) == PNG
