"""A training run with one injected fault: `FAULT_JSON='{...}' python faulty_training.py [train flags...]`.

Used by tests/reliability as a real training process (also under the deepspeed launcher, in place
of llava_ln/train.py; the fault comes through the environment, which the launcher passes on).
FAULT_JSON is absent or "{}" (no fault) or
    {"action": A, "event": E, "n": N, "rank": R}
which does A when this rank reaches the N-th (1-based) event of kind E:
    events:  "file"    an atomic file write is complete, just before it is renamed into place
             "commit"  a checkpoint folder is complete, just before it replaces checkpoint-<step>
             "swap"    between a folder commit's two renames (the old version moved aside, the new
                       one not yet in place)
             "step"    the start of an optimizer step's first micro-batch
    actions: "kill"    SIGKILL this process (kill -9)
             "term"    SIGTERM this process, then carry on (the handler decides)
             "term_job" SIGTERM the whole process group (every rank and the launcher), as a scheduler does
             "int"     SIGINT this process, then carry on
             "hup", "usr1"  SIGHUP / SIGUSR1 this process (a dropped ssh session, SLURM's warning), then carry on
             "enospc"  this write fails with ENOSPC (events "file" and "commit")
             "nan"     this micro-batch's loss becomes NaN (event "step"; also N+1.. when "count" > 1)
Only rank R (default 0) injects. {"report": PATH} (with or without a fault) writes this rank's event
counts to PATH at exit, so a test can draw fault points from a real run. Exits with the training's
exit code.
"""
# ruff: noqa: E402  (the imports follow the sys.path fix below)
import errno
import json
import os
import signal
import sys

# Run as a file (by the deepspeed launcher too): the checkout's package, whatever the working directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch

import llava_ln.core.atomic as atomic
import llava_ln.training.guards.save_guard as save_guard
import llava_ln.training.strategy as strategy_module
from llava_ln.core.errors import run_command


class Injector:
    def __init__(self, fault: dict):
        self.fault = fault
        self.counts = {}
        self.rank = int(os.environ.get("RANK", "0"))

    def reached(self, event: str) -> bool:
        """Count an event; True when this is where the fault fires."""
        self.counts[event] = self.counts.get(event, 0) + 1
        fault = self.fault
        if not fault.get("action") or fault.get("event") != event or self.rank != fault.get("rank", 0):
            return False
        first = fault["n"]
        return first <= self.counts[event] < first + fault.get("count", 1)

    def act(self, path: str = "") -> None:
        action = self.fault["action"]
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "term_job":
            os.killpg(os.getpgrp(), signal.SIGTERM)
        elif action in ("term", "int", "hup", "usr1"):
            os.kill(os.getpid(), getattr(signal, f"SIG{action.upper()}"))
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def install(injector: Injector) -> None:
    real_fsync = atomic._fsync_file
    real_commit = atomic.commit_directory

    def fsync_then_maybe_fail(path):
        real_fsync(path)
        if injector.reached("file"):
            injector.act(path)

    def commit_with_faults(tmp, final_dir):
        if injector.reached("commit"):
            injector.act(final_dir)
        if os.path.exists(final_dir) and injector.reached("swap"):
            os.replace(final_dir, os.path.join(os.path.dirname(final_dir),
                                               atomic.OLD_PREFIX + os.path.basename(final_dir) + "-fault0"))
            injector.act(final_dir)
        real_commit(tmp, final_dir)

    atomic._fsync_file = fsync_then_maybe_fail
    atomic.commit_directory = commit_with_faults
    save_guard.commit_directory = commit_with_faults

    real_forward = strategy_module.TrainingModule.forward
    state = {"micro": 0}

    def forward_with_faults(self, batch):
        loss = real_forward(self, batch)
        if self.training and torch.is_grad_enabled():
            state["micro"] += 1
            if state["micro"] % _accumulation() == 1 % _accumulation() and injector.reached("step"):
                if injector.fault["action"] == "nan":
                    return loss * float("nan")
                injector.act()
        return loss

    strategy_module.TrainingModule.forward = forward_with_faults


def _accumulation() -> int:
    argv = sys.argv
    return int(argv[argv.index("--gradient_accumulation_steps") + 1]) if "--gradient_accumulation_steps" in argv else 1


if __name__ == "__main__":
    fault = json.loads(os.environ.get("FAULT_JSON") or "{}")
    injector = Injector({k: v for k, v in fault.items() if k != "report"})
    install(injector)
    from llava_ln.train import main

    code = run_command(main, sys.argv[1:])
    if fault.get("report"):
        with open(f"{fault['report']}.rank{injector.rank}", "w", encoding="utf-8") as handle:
            json.dump(injector.counts, handle)
    sys.exit(code)
