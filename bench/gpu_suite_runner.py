"""Runs the GPU suite's steps: each a command with its own log, time limit, prerequisites and fact check.

A step's command runs in its own process group (core.processes.run_in_group), so a timeout ends the
launcher and every rank it started, and so does the suite's own end, whichever way it ends; what the
step wrote stays for its fact check (a throughput run cut short still reports the modes it finished).
A step whose prerequisite did not pass, or that would start after the suite's deadline or once the suite
is stopping, is recorded as skipped, so a hang costs one step's time limit and the summary is always
written. Chains of steps can run side by side (one thread each, for the tiny toy runs); the steps of one
chain run in order.
"""
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from llava_ln.core.processes import run_in_group


@dataclass
class Step:
    name: str
    argv: list[str] | Callable[[], list[str]]  # a callable is built when the step starts
    timeout_s: float
    needs: tuple = ()            # every one of these must have passed
    needs_any: tuple = ()        # at least one of these must have passed
    facts: Callable[[], dict] | None = None  # read back what the command wrote; "problems" fail the step
    env: dict = field(default_factory=dict)


class Runner:
    def __init__(self, repo: str, logs: str, budget_s: float):
        self.repo, self.logs = repo, logs
        self.started = time.time()
        self.deadline = self.started + budget_s
        self.results: dict[str, dict] = {}
        self.stopping = False  # set when the suite itself is interrupted: no further step starts
        self._lock = threading.Lock()
        os.makedirs(logs, exist_ok=True)

    def passed(self, name: str) -> bool:
        return self.results.get(name, {}).get("status") == "passed"

    def _record(self, step: Step, result: dict) -> dict:
        with self._lock:
            self.results[step.name] = result
        elapsed = time.time() - self.started
        why = result.get("reason") or "; ".join(result.get("problems", []))
        extra = f" ({why[:200]})" if why else ""
        print(f"[{elapsed:6.1f}s] {step.name}: {result['status']} in {result.get('seconds', 0):.1f}s{extra}",
              flush=True)
        return result

    def _blocker(self, step: Step) -> str | None:
        missing = [n for n in step.needs if not self.passed(n)]
        if missing:
            return f"needs {', '.join(missing)}"
        if step.needs_any and not any(self.passed(n) for n in step.needs_any):
            return f"needs one of {', '.join(step.needs_any)}"
        if self.deadline - time.time() < 5:
            return "suite budget spent"
        if self.stopping:
            return "suite interrupted"
        return None

    def run(self, step: Step) -> dict:
        blocker = self._blocker(step)
        if blocker:
            return self._record(step, {"status": "skipped", "reason": blocker, "seconds": 0.0})
        timeout = min(step.timeout_s, self.deadline - time.time())
        argv = [str(a) for a in (step.argv() if callable(step.argv) else step.argv)]
        out_path, err_path = (os.path.join(self.logs, f"{step.name}.{kind}") for kind in ("out", "err"))
        tick = time.time()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            err.write("$ " + " ".join(argv) + "\n")  # in .err, so .out is exactly what the command printed
            err.flush()
            try:
                rc = run_in_group(argv, timeout=timeout, cwd=self.repo, stdout=out, stderr=err,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **step.env}).returncode
                timed_out = False
            except subprocess.TimeoutExpired:
                rc, timed_out = None, True
        result = {"seconds": round(time.time() - tick, 1), "rc": rc, "timeout_s": round(timeout)}
        facts = _safe_facts(step)
        problems = facts.pop("problems", [])
        result.update(facts)
        if timed_out:
            result.update(status="failed", reason=f"timed out after {timeout:.0f}s")
        elif rc != 0:
            result.update(status="failed", reason=f"exit {rc}: {_last_line(err_path)}")
        else:
            result["status"] = "failed" if problems else "passed"
        if problems:
            result["problems"] = problems
        return self._record(step, result)

    def run_chains(self, chains: list[list[Step]]) -> None:
        """Each chain in its own thread; the steps of a chain in order."""
        with ThreadPoolExecutor(max_workers=max(len(chains), 1)) as pool:
            futures = [pool.submit(lambda c=chain: [self.run(s) for s in c]) for chain in chains]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # Ctrl-C or SIGTERM (forward_stop_signals): the running steps got it too
                self.stopping = True
                raise


def _safe_facts(step: Step) -> dict:
    if step.facts is None:
        return {}
    try:
        return step.facts()
    except Exception as err:  # a fact check must never stop the suite; it fails its step instead
        return {"problems": [f"fact check failed: {type(err).__name__}: {str(err)[:200]}"]}


def _last_line(path: str) -> str:
    """The last meaningful line of a log (the error, usually), shortened for the summary."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle.read()[-20000:].splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if not line.startswith(("[20", "Loading weights")) and "%|" not in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


def write_outputs(summary: dict, work: str, out_dir: str | None, extra_files: dict[str, str]) -> None:
    """The summary as WORK/gpu_suite.json, and with OUT set: the summary, the raw throughput lines and one
    archive of every log and small run file (the device returns at most 8 files)."""
    text = json.dumps(summary, indent=1, allow_nan=True)
    with open(os.path.join(work, "gpu_suite.json"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    if not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "gpu_suite.json"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    for name, source in extra_files.items():
        if os.path.exists(source):
            with open(source, "rb") as src, open(os.path.join(out_dir, name), "wb") as dst:
                dst.write(src.read())
    with tarfile.open(os.path.join(out_dir, "gpu_suite_logs.tar.gz"), "w:gz") as archive:
        for path in _archived_files(work):
            archive.add(path, arcname=os.path.relpath(path, work))


def _archived_files(work: str):
    """Logs and the small files of every run (configs, loss logs, scores, answers); no weights, no toy world
    (it is rebuilt byte for byte from its seed)."""
    paths = [os.path.join(work, name) for name in ("install.json", "gpu_suite.json")]
    for top in ("logs", "runs"):
        for root, _, files in os.walk(os.path.join(work, top)):
            paths += [os.path.join(root, name) for name in sorted(files)]
    for path in paths:
        if (os.path.isfile(path) and os.path.getsize(path) < 2 * 2**20
                and not path.endswith((".safetensors", ".png", ".jpg"))):
            yield path


def print_summary(summary: dict) -> None:
    print("=== gpu_suite summary ===", flush=True)
    sys.stdout.write(json.dumps(summary, separators=(",", ":"), allow_nan=True) + "\n")
    sys.stdout.flush()
