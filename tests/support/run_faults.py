"""Shared material for the run-lifecycle fault tests: a toy world, training subprocesses with a fault, checks.

A case runs a real training process (faulty_training.py, under plain python or the deepspeed launcher
with 2 ranks), injects one fault, then finishes the run the way a user would (resume `latest`, or
start again when nothing was saved) and compares the final weights with an uninterrupted run's.
"""
import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from llava_ln.core.processes import end_group, free_port, run_in_group, start_in_group

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAULTY_TRAINING = os.path.join(REPO, "tests", "support", "faulty_training.py")
ZERO3 = os.path.join(REPO, "zero_configs", "zero3.json")
_WORLD = {}


def toy_world(root: str) -> str:
    """The toy world at a small scale (75 captions), written once per test session."""
    if "path" not in _WORLD:
        from llava_ln.toy.generate import write_toy_world

        path = os.path.join(root, "toy")
        write_toy_world(path, seed=0, scale=0.05)
        _WORLD["path"] = path
    return _WORLD["path"]


def toy_flags(world: str, output_dir: str, **overrides) -> list[str]:
    """Stage 1 (connector) on the toy captions: 6 steps of 4 samples, a checkpoint every 2 steps."""
    values = {
        "model_name_or_path": os.path.join(world, "llm"), "vision_tower": os.path.join(world, "vision"),
        "data_path": os.path.join(world, "data", "pretrain.json"), "image_folder": os.path.join(world, "images"),
        "conv_template": "plain", "tune_mode": "connector", "output_dir": output_dir,
        "per_device_train_batch_size": 4, "max_steps": 6, "save_steps": 2, "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine", "warmup_steps": 1, "logging_steps": 1, "seed": 0, "disable_tqdm": True,
    }
    values.update(overrides)
    argv = []
    for key, value in values.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def command(flags: list[str], ranks: int = 1) -> list[str]:
    if ranks == 1:
        return [sys.executable, FAULTY_TRAINING, *flags]
    return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(ranks), "--master_port",
            str(free_port()), FAULTY_TRAINING, "--deepspeed", ZERO3, *flags]


def _env(fault: dict | None) -> dict:
    env = dict(os.environ, FAULT_JSON=json.dumps(fault or {}))
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train(flags: list[str], fault: dict | None = None, ranks: int = 1, timeout: int = 600):
    """One training process (or launcher) to its end; returns the CompletedProcess."""
    # A session of its own: a fault may signal the whole job's process group, never pytest's.
    return run_in_group(command(flags, ranks), cwd=REPO, env=_env(fault), capture_output=True, text=True,
                        timeout=timeout)


def train_and_signal(flags: list[str], signum: int, delay: float, ranks: int = 1, timeout: int = 600):
    """Start training, wait until its first step is logged plus `delay` seconds, send signum to the whole
    process group (as a scheduler does), and wait for the end. Returns (CompletedProcess-like, seconds to exit)."""
    log = os.path.join(flags[flags.index("--output_dir") + 1], "log.jsonl")
    process = start_in_group(command(flags, ranks), cwd=REPO, env=_env(None), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while process.poll() is None and not (os.path.exists(log) and os.path.getsize(log)) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        sent = time.time()
        if process.poll() is None:
            os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        end_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), time.time() - sent


def finish(flags: list[str], ranks: int = 1) -> subprocess.CompletedProcess:
    """Continue an interrupted run as a user would: `latest` when a checkpoint exists, else start again."""
    output_dir = flags[flags.index("--output_dir") + 1]
    has_checkpoint = any(name.startswith("checkpoint-") for name in os.listdir(output_dir)) \
        if os.path.isdir(output_dir) else False
    done = train(flags + (["--resume_from_checkpoint", "latest"] if has_checkpoint else []), ranks=ranks)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def checkpoints(output_dir: str) -> dict:
    """step -> the checkpoint's trained tensors, for every checkpoint-<step> (each must be complete)."""
    found = {}
    for name in sorted(os.listdir(output_dir)):
        if name.startswith("checkpoint-"):
            path = os.path.join(output_dir, name)
            with open(os.path.join(path, "resume", "trainer_state.json"), encoding="utf-8") as handle:
                assert json.load(handle)["state"]["global_step"] == int(name.split("-")[1])
            with open(os.path.join(path, "manifest.json"), encoding="utf-8") as handle:
                assert json.load(handle)["global_step"] == int(name.split("-")[1])
            found[int(name.split("-")[1])] = load_file(os.path.join(path, "trained.safetensors"))
    return found


def leftovers(output_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(output_dir) if n.startswith((".tmp-", ".old-")))


def trained(output_dir: str) -> dict:
    return load_file(os.path.join(output_dir, "trained.safetensors"))


def assert_same(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def error_lines(stderr: str) -> list[str]:
    """The lines a command printed for the user: `llava-ln: ...` (and no traceback anywhere)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("llava-ln: ") and "received" not in line]
