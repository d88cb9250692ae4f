"""The GPU suite's judgement, on made-up step outputs: a bad resume, a missing or OOM mode, a hung or failed step.

The dry run (test_gpu_suite.py) only sees steps that pass; these make sure the same checks
fail a step when they should, since on the GPU a wrong "passed" would go unnoticed.
"""
import json
import os
import time

import torch
from safetensors.torch import save_file

from bench import gpu_suite_checks as checks
from bench.gpu_suite_runner import Runner, Step


def _run_dir(path, tensors: dict, losses: dict) -> str:
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "trained.safetensors"))
    with open(os.path.join(path, "log.jsonl"), "w", encoding="utf-8") as handle:
        for step, loss in losses.items():
            handle.write(json.dumps({"step": step, "loss": loss}) + "\n")
    return str(path)


def _resume_case(tmp_path, nudge: float):
    """Checkpoint at step 2 (norm 1.0), straight run moved to 2.0, resumed run at 2.0 + nudge."""
    middle = {"norm.weight": torch.ones(4)}
    straight = _run_dir(tmp_path / "straight", {"norm.weight": torch.full((4,), 2.0)}, {3: 0.5, 4: 0.4})
    _run_dir(tmp_path / "straight" / "checkpoint-2", middle, {})
    resumed = _run_dir(tmp_path / "resumed", {"norm.weight": torch.full((4,), 2.0 + nudge)}, {3: 0.5, 4: 0.4 + nudge})
    return straight, resumed


def test_resume_is_judged_against_how_far_training_moved(tmp_path):
    exact = checks.resume_facts(*_resume_case(tmp_path / "a", 0.0), checkpoint_step=2, tolerance=0.0)
    assert exact["bit_identical"] and exact["problems"] == [] and exact["losses_compared"] == 2
    tiny = checks.resume_facts(*_resume_case(tmp_path / "b", 1e-3), checkpoint_step=2, tolerance=0.0)
    assert not tiny["bit_identical"] and tiny["problems"]  # the CPU demands bit-identical weights
    assert abs(tiny["max_abs_diff"] - 1e-3) < 1e-6 and abs(tiny["movement_rel_diff"] - 1e-3) < 1e-6
    assert checks.resume_facts(*_resume_case(tmp_path / "c", 1e-3), 2, tolerance=1e-2)["problems"] == []
    lost = checks.resume_facts(*_resume_case(tmp_path / "d", -0.5), 2, tolerance=1e-2)
    assert lost["problems"] and lost["movement_rel_diff"] == 0.5


def test_throughput_fails_on_an_oom_or_a_missing_mode(tmp_path):
    log = tmp_path / "throughput.out"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"torch": "2.11", "impl": "llava-ln"},
        {"mode": "ln", "step_s_median": 1.5, "tokens_per_s": 10000.0, "peak_mem_gib": 29.0, "gpu": "H200"},
        {"mode": "full", "error": "OOM", "detail": "..."}]) + "\n{\"mode\": \"lo")  # last line cut by a timeout
    facts = checks.throughput_facts(str(log), ["ln", "full", "lora"])
    assert facts["modes_measured"] == 1 and facts["gpu"] == "H200"
    assert facts["problems"] == ["full: OOM", "no result for lora"]
    baseline = tmp_path / "baseline.out"
    baseline.write_text(json.dumps({"mode": "ln", "step_s_median": 1.8, "tokens_per_s": 9000.0,
                                    "peak_mem_gib": 32.5}) + "\n")
    rows = {r["mode"]: r for r in checks.throughput_table(str(log), str(baseline))}
    assert rows["ln"]["speedup"] == 1.2 and rows["ln"]["peak_gib_saved"] == 3.5
    assert rows["full"]["llava_ln_error"] == "OOM"


def test_a_hung_step_is_ended_and_what_needs_it_is_skipped(tmp_path):
    runner = Runner(str(tmp_path), str(tmp_path / "logs"), budget_s=60)
    marker = tmp_path / "child_survived"
    hung = runner.run(Step("hung", ["bash", "-c", f"(sleep 3; touch {marker}) & sleep 30"], timeout_s=1))
    assert hung["status"] == "failed" and "timed out" in hung["reason"]
    assert runner.run(Step("next", ["true"], 5, needs=("hung",)))["reason"] == "needs hung"
    failed = runner.run(Step("bad", ["bash", "-c", "echo the real error >&2; exit 3"], 5))
    assert failed["rc"] == 3 and failed["reason"] == "exit 3: the real error"
    judged = runner.run(Step("judged", ["true"], 5, facts=lambda: {"answered": 0, "problems": ["0 of 9 answered"]}))
    assert judged["status"] == "failed" and judged["problems"] == ["0 of 9 answered"] and judged["answered"] == 0
    assert runner.run(Step("fine", ["true"], 5, needs_any=("bad", "judged", "hung")))["status"] == "skipped"
    time.sleep(3.5)
    assert not marker.exists()  # the whole process group went, not only the shell


def test_steps_past_the_budget_are_skipped(tmp_path):
    runner = Runner(str(tmp_path), str(tmp_path / "logs"), budget_s=1)
    assert runner.run(Step("late", ["true"], 5))["reason"] == "suite budget spent"
