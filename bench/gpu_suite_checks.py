"""What bench/gpu_suite_run.py reads back from each step's files: facts for the summary and whether they hold.

Every function takes the folders or log a step left behind and returns a dict of facts; a
fact dict with "problems" (a list of one-line strings) fails its step even when the command
exited 0. Nothing here runs a model: the suite's steps are the project's own commands, and
these functions only judge what they wrote (run folders, scores.json, JSON lines).
"""
import json
import math
import os

import torch
from safetensors.torch import load_file

# Fields of a throughput JSON line kept in the summary (the raw lines travel in full beside it).
THROUGHPUT_FIELDS = ("step_s_median", "tokens_per_s", "peak_mem_gib", "trainable")


def _read_jsonl(path: str) -> list[dict]:
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line cut by a timeout
    return records


def train_facts(run_dir: str, zero_stage: int, precision: str, device: str, checkpoint_step: int = 0) -> dict:
    """A training run folder: what ran (strategy, ZeRO stage, precision, device) and how the loss went."""
    problems = []
    config_path = os.path.join(run_dir, "run_config.json")
    if not os.path.exists(config_path):
        return {"problems": [f"{config_path} missing"]}
    with open(config_path, encoding="utf-8") as handle:
        resolved = json.load(handle)["resolved"]
    stage = resolved.get("deepspeed_config", {}).get("zero_optimization", {}).get("stage")
    log = _read_jsonl(os.path.join(run_dir, "log.jsonl"))
    losses = [r["loss"] for r in log if "loss" in r]
    speeds = [r["tokens_per_s"] for r in log[1:] if "tokens_per_s" in r]  # the first step pays for warm-up
    facts = {"strategy": resolved.get("strategy"), "zero_stage": stage, "precision": resolved.get("precision"),
             "device": resolved.get("device"), "backend": resolved.get("backend"),
             "world_size": resolved.get("world_size"), "steps": resolved.get("total_steps"),
             "first_loss": round(losses[0], 4) if losses else None,
             "last_loss": round(losses[-1], 4) if losses else None,
             "train_tokens_per_s": round(sorted(speeds)[len(speeds) // 2], 1) if speeds else None}
    if facts["strategy"] != "DeepSpeedStrategy" or stage != zero_stage:
        problems.append(f"ran {facts['strategy']} stage {stage}, expected DeepSpeedStrategy stage {zero_stage}")
    if facts["precision"] != precision or not str(facts["device"]).startswith(device):
        problems.append(f"ran {facts['precision']} on {facts['device']}, expected {precision} on {device}")
    if not losses or not all(math.isfinite(v) for v in losses):
        problems.append("no finite loss logged")
    trained = os.path.join(run_dir, "trained.safetensors")
    if os.path.exists(trained):
        tensors = load_file(trained)
        facts["trained_tensors"] = len(tensors)
        facts["trained_parameters"] = sum(t.numel() for t in tensors.values())
    else:
        problems.append(f"{trained} missing")
    if checkpoint_step:
        resume_dir = os.path.join(run_dir, f"checkpoint-{checkpoint_step}", "resume")
        facts["mid_run_checkpoint"] = os.path.isdir(resume_dir)
        if not facts["mid_run_checkpoint"]:
            problems.append(f"{resume_dir} missing")
    facts["problems"] = problems
    return facts


def weight_difference(run_a: str, run_b: str) -> dict:
    """Largest elementwise difference between two runs' trained tensors, and whether they are bit-identical."""
    a, b = load_file(os.path.join(run_a, "trained.safetensors")), load_file(os.path.join(run_b, "trained.safetensors"))
    if set(a) != set(b):
        return {"problems": [f"different tensors: {sorted(set(a) ^ set(b))[:3]}"]}
    worst, worst_name = 0.0, None
    for name in sorted(a):
        diff = (a[name].float() - b[name].float()).abs().max().item() if a[name].numel() else 0.0
        if diff > worst:
            worst, worst_name = diff, name
    return {"tensors": len(a), "bit_identical": all(torch.equal(a[n], b[n]) for n in a),
            "max_abs_diff": worst, "worst_tensor": worst_name}


def resume_facts(straight: str, resumed: str, checkpoint_step: int, tolerance: float) -> dict:
    """N steps + resume + N steps against 2N straight steps.

    Besides the largest weight difference, "movement_rel_diff" relates the two runs' weights to
    how far training moved them after the checkpoint: |resumed - straight| / |straight - checkpoint|
    over all trained tensors. A resume that lost the optimizer state, schedule or data position
    gives a value near 1; nondeterministic GPU kernels alone give a tiny one. The step passes when
    that value is <= tolerance (0 demands bit-identical weights).
    """
    facts = weight_difference(straight, resumed)
    if "problems" in facts:
        return facts
    final = load_file(os.path.join(straight, "trained.safetensors"))
    other = load_file(os.path.join(resumed, "trained.safetensors"))
    middle = load_file(os.path.join(straight, f"checkpoint-{checkpoint_step}", "trained.safetensors"))
    apart = math.sqrt(sum(float((final[n].double() - other[n].double()).pow(2).sum()) for n in final))
    moved = math.sqrt(sum(float((final[n].double() - middle[n].double()).pow(2).sum()) for n in final))
    facts["movement_rel_diff"] = apart / moved if moved else (0.0 if apart == 0 else math.inf)
    logs = [{r["step"]: r["loss"] for r in _read_jsonl(os.path.join(d, "log.jsonl")) if "loss" in r}
            for d in (straight, resumed)]
    after = [s for s in logs[1] if s > checkpoint_step and s in logs[0]]
    facts["losses_compared"] = len(after)
    facts["max_loss_diff"] = max((abs(logs[0][s] - logs[1][s]) for s in after), default=None)
    facts["tolerance"] = tolerance
    problems = []
    if not after:
        problems.append("no logged loss after the checkpoint to compare")
    if tolerance == 0 and not facts["bit_identical"]:
        problems.append(f"resumed weights differ (max {facts['max_abs_diff']:.3g} in {facts['worst_tensor']})")
    elif facts["movement_rel_diff"] > tolerance:
        problems.append(f"resumed weights differ by {facts['movement_rel_diff']:.3g} of the movement (> {tolerance})")
    facts["problems"] = problems
    return facts


def eval_facts(output_dir: str, benchmark: str, batch_size: int) -> dict:
    """A `llava-ln eval --score` run: the headline scores and how many questions were answered.

    The command prints a one-line headline and writes its summary (counts, files, scores) to
    OUTPUT_DIR/eval_summary.json, which is what is read here.
    """
    path = os.path.join(output_dir, "scores.json")
    if not os.path.exists(path):
        return {"problems": [f"{path} missing"]}
    with open(path, encoding="utf-8") as handle:
        scores = json.load(handle)
    facts = {"batch_size": batch_size}
    if benchmark == "pope":
        splits = scores.get("splits", {})
        facts["mean_f1"] = round(float(scores["mean_f1"]), 4)
        facts["accuracy"] = round(sum(v["accuracy"] for v in splits.values()) / max(len(splits), 1), 4)
        facts["splits"] = sorted(splits)
    elif benchmark == "vqav2":
        facts["overall"] = round(float(scores["overall"]), 2)
    try:
        with open(os.path.join(output_dir, "eval_summary.json"), encoding="utf-8") as handle:
            summary = json.load(handle)
        facts["questions"], facts["answered"] = summary.get("questions"), summary.get("generated_answers")
    except (OSError, json.JSONDecodeError):
        facts["questions"] = facts["answered"] = None
    problems = []
    if not facts["questions"] or facts["answered"] != facts["questions"]:
        problems.append(f"{facts['answered']} of {facts['questions']} questions answered")
    facts["problems"] = problems
    return facts


def export_facts(export_dir: str, stdout_path: str) -> dict:
    """`llava-ln export --format hf`: the folder exists and the command says it verified it with transformers."""
    with open(stdout_path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    verified = [line for line in lines if line.startswith("exported ") and "verified with" in line]
    facts = {"verified": verified[-1][verified[-1].rfind("(") + 1:].rstrip(")") if verified else None,
             "config": os.path.exists(os.path.join(export_dir, "config.json"))}
    facts["problems"] = [] if verified and facts["config"] else ["export not verified or folder incomplete"]
    return facts


def _per_mode(log_path: str) -> tuple[dict, list]:
    """mode -> its compact record (or {"error": ...}), and the non-result lines (versions)."""
    per_mode, other = {}, []
    for record in _read_jsonl(log_path):
        if "mode" not in record:
            other.append(record)
        elif "error" in record:
            per_mode[record["mode"]] = {"error": record["error"]}
        else:
            per_mode[record["mode"]] = {k: record.get(k) for k in THROUGHPUT_FIELDS if k in record}
            per_mode[record["mode"]]["gpu"] = record.get("gpu")
    return per_mode, other


def throughput_facts(log_path: str, modes: list[str]) -> dict:
    """JSON lines of bench/train_throughput.py or hf_peft_baseline.py: every mode measured, none out of memory."""
    per_mode, _ = _per_mode(log_path)
    problems = [f"{mode}: {r['error']}" for mode, r in per_mode.items() if "error" in r]
    missing = [m for m in modes if m not in per_mode]
    if missing:
        problems.append(f"no result for {', '.join(missing)}")
    gpu = next((r["gpu"] for r in per_mode.values() if r.get("gpu")), None)
    return {"modes_measured": sum("error" not in r for r in per_mode.values()), "gpu": gpu, "problems": problems}


def throughput_table(ours_path: str, baseline_path: str) -> list[dict]:
    """Side by side per mode: llava-ln vs the plain transformers+PEFT loop, measured in the same call."""
    ours, theirs = _per_mode(ours_path)[0], _per_mode(baseline_path)[0]
    rows = []
    for mode in list(ours) + [m for m in theirs if m not in ours]:
        mine, other = ours.get(mode, {}), theirs.get(mode, {})
        row = {"mode": mode, "llava_ln_step_s": mine.get("step_s_median"),
               "llava_ln_tokens_per_s": mine.get("tokens_per_s"), "llava_ln_peak_gib": mine.get("peak_mem_gib"),
               "baseline_step_s": other.get("step_s_median"), "baseline_tokens_per_s": other.get("tokens_per_s"),
               "baseline_peak_gib": other.get("peak_mem_gib"), "trainable": mine.get("trainable"),
               # the recompute plan train_throughput.py ran with, and its estimate of the peak measured above
               "llava_ln_checkpointed_blocks": mine.get("checkpointed_blocks"),
               "llava_ln_estimated_peak_gib": mine.get("estimated_peak_gib")}
        if row["llava_ln_step_s"] and row["baseline_step_s"]:
            row["speedup"] = round(row["baseline_step_s"] / row["llava_ln_step_s"], 3)
        if row["llava_ln_peak_gib"] is not None and row["baseline_peak_gib"] is not None:
            row["peak_gib_saved"] = round(row["baseline_peak_gib"] - row["llava_ln_peak_gib"], 2)
        for side, record in (("llava_ln", mine), ("baseline", other)):
            if "error" in record:
                row[f"{side}_error"] = record["error"]
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows
