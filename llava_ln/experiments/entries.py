"""A comparison entry, computed from a finished run's folder alone, and the comparison's two reports.

Everything in an entry is read back from files the run wrote, so a reused run (a restarted
comparison) gets exactly the entry it would have got the first time:
  trainable, trainable_pct   trainable_parameters.txt (its "all" row)
  peak_memory_gib            the largest peak_memory_gib in log.jsonl (CUDA: allocator high-water mark,
                             max over ranks; CPU: the process's peak resident set)
  wall_s, tokens_per_s       the training loop's time and throughput from log.jsonl: each logged
                             interval's tokens / tokens_per_s, every step counted once even when a
                             resumed run logged it twice (evaluation during training is left out)
  scores, average            each benchmark's headline number (evaluation.subset_scores.headline) and
                             their mean, with MME perception put on a 0-100 scale (divided by 2 x the
                             number of perception subtasks scored) like VQAv2 and POPE (CIDEr x100, as
                             papers print it, can pass 100)
"""
import json
import os

from llava_ln.core import bounded_json
from llava_ln.core.atomic import atomic_path
from llava_ln.core.benchmarks import BENCHMARKS
from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.subset_scores import headline
from llava_ln.training.reporting import LOG_FILE, TRAINABLE_TABLE


def column_label(benchmark: str) -> str:
    """A benchmark's short name in tables and plots (core.benchmarks), or the name itself."""
    spec = BENCHMARKS.get(benchmark)
    return spec.column if spec is not None else benchmark


def read_log(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [bounded_json.loads(line, f"{path} line {number}") for number, line in enumerate(handle, 1) if line.strip()]


def train_records(records: list) -> list[dict]:
    """The training lines (not evaluation lines), the last one kept for a step logged twice."""
    by_step = {r["step"]: r for r in records if "loss" in r}
    return [by_step[step] for step in sorted(by_step)]


def eval_records(records: list) -> list[dict]:
    by_step = {r["step"]: r for r in records if "eval" in r}
    return [by_step[step] for step in sorted(by_step)]


def trainable_counts(run_dir: str) -> tuple[int, float]:
    """(trainable parameters, their share of all parameters in %) from trainable_parameters.txt."""
    path = os.path.join(run_dir, TRAINABLE_TABLE)
    try:
        with open(path, encoding="utf-8") as handle:
            row = next(line.split() for line in handle if line.startswith("all "))
        return int(row[2].replace(",", "")), float(row[3].strip("(%"))
    except (OSError, StopIteration, IndexError, ValueError):
        raise LlavaLnError(f"{path}: no readable 'all' row (is {run_dir} a llava-ln run folder?)") from None


def mme_scale(scores: dict) -> float:
    """The MME perception maximum for the subtasks this scorer JSON holds (200 per subtask)."""
    present = [name for name in scores.get("perception_subtasks", []) if name in scores.get("subtasks", {})]
    return 200.0 * max(1, len(present))


def average(headlines: dict, raw: dict) -> float | None:
    values = []
    for benchmark, value in headlines.items():
        if value is None:
            return None
        values.append(100.0 * value / mme_scale(raw[benchmark]) if benchmark == "mme" else value)
    return sum(values) / len(values) if values else None


def run_entry(run_dir: str, raw_scores: dict) -> dict:
    """The comparison entry of one finished run; raw_scores: {benchmark: scorer JSON}."""
    trainable, pct = trainable_counts(run_dir)
    records = read_log(run_dir)
    lines = train_records(records)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in lines if r.get("tokens_per_s"))
    tokens = sum(r["tokens"] for r in lines if r.get("tokens_per_s"))
    peaks = [r["peak_memory_gib"] for r in lines if r.get("peak_memory_gib") is not None]
    headlines = {name: headline(name, scores) for name, scores in raw_scores.items()}
    return {
        "trainable": trainable,
        "trainable_pct": pct,
        "scores": {name: None if value is None else round(value, 2) for name, value in headlines.items()},
        "average": _rounded(average(headlines, raw_scores)),
        "peak_memory_gib": _rounded(max(peaks) if peaks else None, 3),
        "wall_s": _rounded(seconds, 1),
        "tokens_per_s": _rounded(tokens / seconds if seconds else None, 1),
        "final_loss": _rounded(lines[-1]["loss"], 4) if lines else None,
        "run_dir": os.path.abspath(run_dir),
    }


def _rounded(value, digits: int = 2):
    return None if value is None else round(float(value), digits)


def write_comparison(output_dir: str, entries: dict, settings: dict) -> dict:
    """comparison.json and comparison.md; returns the JSON payload."""
    payload = {"modes": entries, "settings": settings}
    with atomic_path(os.path.join(output_dir, "comparison.json"), ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:  # runs keep their order (--modes, then --variants)
            json.dump(payload, handle, indent=2)
            handle.write("\n")
    with atomic_path(os.path.join(output_dir, "comparison.md"), ".md") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(markdown_table(entries, settings))
    return payload


def markdown_table(entries: dict, settings: dict) -> str:
    """The paper's table shape: one row per run, benchmarks, average, trainable share, memory, time."""
    benchmarks = list(next(iter(entries.values()))["scores"]) if entries else []
    memory = "peak GiB" if settings.get("device") == "cuda" else "peak RSS GiB"
    header = (["run", "mode"] + [column_label(b) for b in benchmarks]
              + ["average", "trainable", "trainable %", memory, "train s", "tokens/s"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in entries.items():
        cells = [name, entry.get("mode", name)] + [_cell(entry["scores"].get(b)) for b in benchmarks]
        cells += [_cell(entry["average"]), f"{entry['trainable']:,}", f"{entry['trainable_pct']:.3f}",
                  _cell(entry["peak_memory_gib"], 3), _cell(entry["wall_s"], 1), _cell(entry["tokens_per_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = settings.get("notes", [])
    return "\n".join(["# Tuning modes compared", "", *lines, "", *[f"- {note}" for note in notes], ""])


def _cell(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"
