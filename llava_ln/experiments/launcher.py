"""Start a training run the way a user would: `python -m llava_ln.train`, `torchrun` or `deepspeed`.

`llava-ln compare` never trains inside its own process: each run is the normal entry point in a
child process (so a run is exactly what `llava-ln train` with the same flags does, a crash or a
kill stays inside that run, and GPUs are used through the usual launchers). The child's output
goes to a log file next to the run; a failure is one line naming the run and that file. The child
leads a process group of its own (core.processes), ended with the launcher and its ranks however
the wait for it ends; under forward_stop_signals a Ctrl-C or SIGTERM reaches it first, so a
training finishes its step and writes a checkpoint within the grace period.

  python     one process (CPU, or one GPU)                     the default without CUDA
  torchrun   torchrun --nproc_per_node N -m llava_ln.train     CUDA, no --deepspeed in the flags
  deepspeed  deepspeed --num_gpus N llava_ln/train.py          CUDA with --deepspeed in the flags
"""
import os
import subprocess
import sys

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.processes import end_group, free_port, start_in_group

LAUNCHERS = ("auto", "python", "torchrun", "deepspeed")
TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
# Between SIGTERM and SIGKILL when a run has to end early: time for a training to finish its optimizer
# step and write a checkpoint (the next attempt resumes from it).
STOP_GRACE_S = 120.0


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_launcher(launcher: str, num_gpus: int, train_argv: list) -> tuple[str, int]:
    """(launcher, processes) for these flags: auto picks as the module docstring says."""
    if launcher not in LAUNCHERS:
        raise LlavaLnError(f"--launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    gpus = num_gpus if num_gpus > 0 else visible_gpus()
    if launcher == "auto":
        if gpus == 0:
            return "python", 1
        return ("deepspeed" if "--deepspeed" in train_argv else "torchrun" if gpus > 1 else "python"), gpus
    if launcher == "python":
        return "python", 1
    return launcher, max(gpus, 1)


def module_command(launcher: str, processes: int, module: str, argv: list) -> list[str]:
    """`python -m module argv`, or the same under torchrun with `processes` ranks."""
    if launcher == "python":
        return [sys.executable, "-m", module, *argv]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port()), "-m", module, *argv]


def train_command(launcher: str, processes: int, train_argv: list) -> list[str]:
    if launcher in ("python", "torchrun"):
        return module_command(launcher, processes, "llava_ln.train", train_argv)
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    return [deepspeed if os.path.exists(deepspeed) else "deepspeed", "--num_gpus", str(processes),
            "--master_port", str(free_port()), TRAIN_SCRIPT, *train_argv]


def run_logged(command: list, log_path: str, what: str, env: dict | None = None) -> float:
    """Run command with stdout and stderr appended to log_path; returns the CPU seconds it (and the
    processes it waited for) used. A non-zero exit is a LlavaLnError."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        child = start_in_group(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
            child.returncode = os.waitstatus_to_exitcode(status)
        finally:
            end_group(child, STOP_GRACE_S)  # also what a launcher left behind after a normal end
    if child.returncode != 0:
        raise LlavaLnError(f"{what} failed (exit {child.returncode}); its output is in {log_path}: "
                           f"{_last_line(log_path)}")
    return usage.ru_utime + usage.ru_stime


def _last_line(path: str) -> str:
    """The log's last error-looking line (the one-line LlavaLnError message), else its last line."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    for line in reversed(lines[-40:]):
        if "error" in line.lower():
            return line[-300:]
    return lines[-1][-300:] if lines else ""
