"""eval/*.sh: each launches `llava-ln eval` for its benchmark with flags the command accepts, one process per GPU.

The launchers are replaced by stubs that print their command line (nothing runs); nvidia-smi by one that
lists two GPUs, so the device count the scripts detect is known.
"""
import glob
import os
import shlex
import subprocess

import pytest

from llava_ln.commands.args import EVAL_FLAGS
from llava_ln.core.flags import parse_command_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(os.path.basename(path) for path in glob.glob(os.path.join(REPO, "eval", "*.sh"))
                 if not path.endswith("common.sh"))


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("launchers")
    for name, body in (("llava-ln", 'echo "$0" "$@"'), ("torchrun", 'echo "$0" "$@"'),
                       ("nvidia-smi", 'printf "GPU 0: H100 (UUID: a)\\nGPU 1: H100 (UUID: b)\\n"')):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return str(folder)


def launched(stubs, script: str, *extra, **env) -> list:
    environment = {key: value for key, value in os.environ.items() if key not in ("GPUS", "CUDA_VISIBLE_DEVICES")}
    environment.update(PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", CKPT="/ckpt/my-run/", **env)
    done = subprocess.run(["bash", os.path.join(REPO, "eval", script), *extra], capture_output=True, text=True,
                          env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def test_every_script_passes_only_flags_eval_accepts(stubs):
    assert len(SCRIPTS) == 5
    for script in SCRIPTS:
        command = launched(stubs, script, "--batch_size", "4", GPUS="1")
        assert os.path.basename(command[0]) == "llava-ln" and command[1] == "eval", command
        args, _ = parse_command_flags(command[2:], EVAL_FLAGS)
        assert args.benchmark == script[:-3] and args.score and args.batch_size == 4
        assert args.output_dir == f"./eval_results/my-run/{args.benchmark}"


@pytest.mark.parametrize("env, processes", [({}, 2), ({"CUDA_VISIBLE_DEVICES": "3"}, 1),
                                            ({"CUDA_VISIBLE_DEVICES": ""}, 1), ({"GPUS": "0"}, 1)])
def test_one_process_per_visible_gpu(stubs, env, processes):
    """An empty CUDA_VISIBLE_DEVICES hides every GPU (torch sees none): one plain process, not nvidia-smi's count."""
    command = launched(stubs, "pope.sh", **env)
    if processes == 1:
        assert os.path.basename(command[0]) == "llava-ln"
    else:
        assert os.path.basename(command[0]) == "torchrun"
        assert command[command.index("--nproc_per_node") + 1] == str(processes)
        parse_command_flags(command[command.index("eval") + 1:], EVAL_FLAGS)
