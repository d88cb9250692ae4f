"""`llava-ln analyze`: layer-representation similarity of checkpoints and the gradient statistics of their runs.

    llava-ln analyze --checkpoints OUT/ln/run,OUT/full/run --data EVAL_SET [--image_folder DIR]
                     [--num_samples 64] [--output_dir DIR] [--json]

Layer similarity: similarity.py, on the first --num_samples records of --data (LLaVA format, asked
in each checkpoint's own template). Gradient statistics: read from each checkpoint's run folder
log.jsonl (written with --log_grad_stats; `llava-ln compare` turns it on); per optimizer group
and for all groups together ("all"): the mean gradient norm, the mean over logging windows of the
norm's variance, and the mean relative variance (variance / mean^2, comparable across groups and
modes whose gradients differ in scale). A checkpoint without them gets null.

JSON (printed with --json, always written to OUTPUT_DIR/analysis.json when --output_dir is given):
  {"layer_similarity": {CKPT: {"all_pairs", "adjacent", "image", "text", "samples"}},
   "grad_stats": {CKPT: {GROUP: {"mean_norm", "mean_var", "mean_rel_var", "steps", "windows"}} | null}}
CKPT is the checkpoint as given, or its label when given as LABEL=PATH.
"""
import json
import os

from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.flag_domains import check_flag_domains
from llava_ln.experiments.args import AnalyzeArguments
from llava_ln.experiments.entries import read_log, train_records


def parse_checkpoints(text: str) -> dict:
    """{label: path}; a bare path is its own label."""
    checkpoints = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, path = item.partition("=")
        label, path = (label, path) if sep else (item, item)
        if not os.path.isdir(path):
            raise LlavaLnError(f"--checkpoints: {path} is not a folder")
        if label in checkpoints:
            raise LlavaLnError(f"--checkpoints: {label!r} is listed twice")
        checkpoints[label] = path
    if not checkpoints:
        raise LlavaLnError("--checkpoints: give at least one run folder")
    return checkpoints


def run_folder_of(path: str) -> str:
    """A checkpoint-<step> folder's run folder (its log.jsonl is there); a run folder itself."""
    return os.path.dirname(os.path.abspath(path)) if os.path.basename(path.rstrip("/")).startswith("checkpoint-") \
        else path


def grad_summary(records: list) -> dict | None:
    """Per group: mean norm, mean window variance, mean relative variance, steps and windows seen."""
    windows = [r["grad_stats"] for r in train_records(records) if "grad_stats" in r]
    if not windows:
        return None
    summary = {}
    for group in windows[0]:
        stats = [w[group] for w in windows if group in w]
        norms = [value for s in stats for value in s["norms"]]
        relative = [s["var"] / s["mean"] ** 2 for s in stats if s["mean"]]
        summary[group] = {
            "mean_norm": sum(norms) / len(norms),
            "mean_var": sum(s["var"] for s in stats) / len(stats),
            "mean_rel_var": sum(relative) / len(relative) if relative else None,
            "steps": len(norms),
            "windows": len(stats),
        }
    return summary


def grad_series(records: list, group: str = "all") -> dict | None:
    """Per-step norms and per-window variances of one group, for the plot."""
    steps, norms, window_steps, window_var = [], [], [], []
    for record in train_records(records):
        stats = record.get("grad_stats", {}).get(group)
        if not stats:
            continue
        # A window's norms belong to the steps that end at the record's step.
        steps += list(range(record["step"] - len(stats["norms"]) + 1, record["step"] + 1))
        norms += stats["norms"]
        window_steps.append(record["step"])
        window_var.append(stats["var"])
    return {"steps": steps, "norms": norms, "window_steps": window_steps, "window_var": window_var} if norms else None


def run_analyze(args: AnalyzeArguments) -> dict:
    check_flag_domains(args)  # parse_flags checked a command line's; this covers flags built in code
    checkpoints = parse_checkpoints(args.checkpoints)
    result = {"layer_similarity": {}, "grad_stats": {}}
    matrices, series = {}, {}
    if args.data:
        from llava_ln.experiments.similarity import checkpoint_similarity

        for label, path in checkpoints.items():
            similarity = checkpoint_similarity(path, args.data, args.image_folder, args.num_samples,
                                               args.batch_size, args.device, max_image_pixels=args.max_image_pixels)
            matrices[label] = similarity
            result["layer_similarity"][label] = {k: v for k, v in similarity.items() if k != "matrix"}
    for label, path in checkpoints.items():
        records = read_log(run_folder_of(path))
        result["grad_stats"][label] = grad_summary(records)
        values = grad_series(records)
        if values:
            series[label] = values
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        result["plots"] = _plots(args.output_dir, matrices, series)
        write_json_atomic(os.path.join(args.output_dir, "analysis.json"), result)
    return result


def _plots(output_dir: str, matrices: dict, series: dict) -> list | None:
    """The plots' paths; None without matplotlib."""
    from llava_ln.experiments.plots import grad_stats_plot, pyplot, similarity_plot

    plt = pyplot()
    if plt is None:
        return None
    paths = []
    if matrices:
        paths.append(similarity_plot(plt, matrices, os.path.join(output_dir, "layer_similarity.png")))
    if series:
        paths.append(grad_stats_plot(plt, series, os.path.join(output_dir, "grad_stats.png")))
    return paths


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for label, values in result["layer_similarity"].items():
        print(f"{label}: layer similarity all pairs {values['all_pairs']:.4f}, adjacent {values['adjacent']:.4f}, "
              f"image {_fmt(values['image'])}, text {_fmt(values['text'])} ({values['samples']} samples)")
    for label, groups in result["grad_stats"].items():
        if groups is None:
            print(f"{label}: no gradient statistics in its log.jsonl (train with --log_grad_stats)")
            continue
        overall = groups.get("all", {})
        print(f"{label}: gradient norm {_fmt(overall.get('mean_norm'))}, window variance "
              f"{_fmt(overall.get('mean_var'), '.3g')}, relative variance {_fmt(overall.get('mean_rel_var'), '.3g')}")
    if "plots" in result:
        from llava_ln.experiments.plots import NO_MATPLOTLIB

        print(NO_MATPLOTLIB if result["plots"] is None else "plots: " + ", ".join(result["plots"]))


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)
