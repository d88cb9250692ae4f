"""Launching training the way users do: the real deepspeed launcher on this CPU machine, or a fresh process.

DeepSpeed keeps its process group for the life of a process, so nothing DeepSpeed-related runs inside
the pytest process: one-rank runs go to run_trainings.py in a fresh process, multi-rank runs to the
`deepspeed` launcher (gloo on the CPU). Each leads a process group of its own, ended however the test
ends (core.processes.run_in_group), so a timeout or a Ctrl-C leaves no rank behind.
"""
import json
import os
import sys

from llava_ln.core.processes import free_port, run_in_group

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPPORT = os.path.join(REPO, "tests", "support")
PARTITIONED_LOG = "ZeRO-3: model created partitioned"  # training/zero/partitioned_init.py logs it after a partitioned build


def deepspeed_command(argv: list[str], num_gpus: int = 2, script: str = "llava_ln/train.py") -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(num_gpus),
            "--master_port", str(free_port()), script, *argv]


def deepspeed_launch(argv: list[str], num_gpus: int = 2, script: str = "llava_ln/train.py") -> str:
    """Run the launcher to completion (asserting success); returns stdout + stderr."""
    done = run_in_group(deepspeed_command(argv, num_gpus, script), cwd=REPO, capture_output=True, text=True,
                        timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    return done.stdout + done.stderr


def run_in_fresh_process(runs: list[list[str]], workdir: str) -> str:
    """Several trainings one after another in one fresh process (run_trainings.py); returns its output."""
    spec = os.path.join(workdir, "runs.json")
    with open(spec, "w", encoding="utf-8") as handle:
        json.dump(runs, handle)
    done = run_in_group([sys.executable, os.path.join(SUPPORT, "run_trainings.py"), spec], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout + done.stderr
