"""One run's corner of a comparison's output folder: its status, its training attempts, its evaluation.

  <run>/run/          the training run folder
  <run>/status.json   the run's train.py flags, its state ("training" / "trained") and every attempt
                      (start, end, seconds, CPU seconds, the checkpoint it resumed from); evaluations
  <run>/train.log     the training processes' output; <run>/eval.log the evaluation process's
  <run>/eval/         answers and official result files per benchmark; <run>/scores.json the scores

A trained run is reused; an interrupted one resumes from its newest checkpoint (or starts over when
it had none); one whose status holds other flags is refused rather than silently reused.
"""
import json
import logging
import os
import resource
import time

from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.bounded_json import read_json_object
from llava_ln.core.errors import LlavaLnError
from llava_ln.experiments import launcher
from llava_ln.experiments.args import CompareArguments
from llava_ln.experiments.compare_settings import Setup

logger = logging.getLogger("llava_ln.compare")


class RunFolder:
    """One run's corner of OUTPUT_DIR: its run folder, status, log, evaluation and scores."""

    def __init__(self, output_dir: str, name: str):
        self.root = os.path.join(output_dir, name)
        self.name = name
        self.run_dir = os.path.join(self.root, "run")
        self.status_path = os.path.join(self.root, "status.json")
        self.log_path = os.path.join(self.root, "train.log")
        self.scores_path = os.path.join(self.root, "scores.json")

    def status(self) -> dict | None:
        if not os.path.isfile(self.status_path):
            return None
        return read_json_object(self.status_path, f"compare run {self.name!r}: its status file")

    def write_status(self, status: dict) -> None:
        write_json_atomic(self.status_path, status)

    def trained(self) -> bool:
        status = self.status()
        return bool(status and status["state"] == "trained" and os.path.isfile(os.path.join(self.run_dir,
                                                                                            "manifest.json")))


def ensure_trained(folder: RunFolder, flags: list, how: tuple, env: dict | None) -> str:
    """Train the run unless its folder already holds it; continue an interrupted one. Returns its state."""
    os.makedirs(folder.root, exist_ok=True)
    status = folder.status()
    if status is not None and status["flags"] != flags:
        raise LlavaLnError(f"{folder.root} holds run {folder.name!r} trained with other flags; remove that folder "
                           "or choose another --output_dir")
    if folder.trained():
        return "reused"
    from llava_ln.training.checkpointing import list_checkpoints

    checkpoints = list_checkpoints(folder.run_dir) if os.path.isdir(folder.run_dir) else []
    status = status or {"name": folder.name, "flags": flags, "attempts": []}
    resumed_from = os.path.basename(checkpoints[-1][1]) if checkpoints else None
    extra = ["--resume_from_checkpoint", "latest"] if checkpoints else ["--overwrite_output_dir", "true"]
    attempt = {"started": time.time(), "resumed_from": resumed_from}
    status.update(state="training", attempts=status["attempts"] + [attempt])
    folder.write_status(status)
    logger.info("%s: %s", folder.name, f"resuming from {resumed_from}" if resumed_from else "training")
    started = time.perf_counter()
    cpu = launcher.run_logged(launcher.train_command(*how, flags + extra), folder.log_path, f"run {folder.name!r}",
                              env)
    attempt.update(ended=time.time(), seconds=round(time.perf_counter() - started, 1), cpu_s=round(cpu, 1))
    status.update(state="trained")
    folder.write_status(status)
    return "resumed" if resumed_from else "trained"


def evaluate_run(folder: RunFolder, setup: Setup, args: CompareArguments, how: tuple, env: dict | None) -> dict:
    """{benchmark: scorer JSON}, cached in scores.json (a trained run never changes).

    In this process when runs go one at a time on a CPU or one GPU; else in a child process (under
    torchrun on several GPUs), `python -m llava_ln.experiments.benchmarks`."""
    cached = {}
    if os.path.isfile(folder.scores_path):
        cached = read_json_object(folder.scores_path, f"compare run {folder.name!r}: its scores file")
    todo = [b for b in setup.benchmarks if b not in cached]
    if todo:
        eval_dir = os.path.join(folder.root, "eval")
        started, cpu_before = time.perf_counter(), _own_cpu_seconds()
        if args.parallel > 1 or how[1] > 1:
            fresh = os.path.join(folder.root, "scores.new.json")
            command = launcher.module_command("torchrun" if how[1] > 1 else "python", how[1],
                                              "llava_ln.experiments.benchmarks", [
                "--model_path", folder.run_dir, "--eval_root", setup.paths["eval_data"], "--output_dir", eval_dir,
                "--benchmarks", ",".join(todo), "--max_new_tokens", json.dumps(setup.max_new_tokens),
                "--batch_size", str(setup.eval_batch_size), "--scores_file", fresh])
            cpu = launcher.run_logged(command, os.path.join(folder.root, "eval.log"), f"evaluation of {folder.name!r}",
                                      env)
            cached.update(read_json_object(fresh, f"compare run {folder.name!r}: its fresh scores file"))
        else:
            from llava_ln.experiments.benchmarks import evaluate_benchmarks

            cached.update(evaluate_benchmarks(folder.run_dir, setup.paths["eval_data"], eval_dir, todo,
                                              setup.max_new_tokens, setup.eval_batch_size))
            cpu = _own_cpu_seconds() - cpu_before
        write_json_atomic(folder.scores_path, cached)
        status = folder.status()
        status.setdefault("evaluations", []).append({"benchmarks": todo, "cpu_s": round(cpu, 1),
                                                     "seconds": round(time.perf_counter() - started, 1)})
        folder.write_status(status)
    return {b: cached[b] for b in setup.benchmarks}


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def costs(folder: RunFolder) -> dict:
    """What the run cost on this machine: process seconds and CPU seconds of training (every attempt,
    an attempt killed before its end excepted) and of the final evaluation."""
    status = folder.status()
    attempts = [a for a in status["attempts"] if "seconds" in a]
    evaluations = status.get("evaluations", [])
    return {"process_s": round(sum(a["seconds"] for a in attempts), 1),
            "train_cpu_s": round(sum(a.get("cpu_s", 0.0) for a in attempts), 1),
            "eval_s": round(sum(e["seconds"] for e in evaluations), 1),
            "eval_cpu_s": round(sum(e["cpu_s"] for e in evaluations), 1)}
