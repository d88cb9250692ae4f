"""PNG plots of a comparison and of an analysis (matplotlib, the `demo` extra; without it, no plots, and the
commands print NO_MATPLOTLIB instead of the plots' paths).

Comparison (llava-ln compare):
  score_vs_trainable.png   average and each benchmark's score against trainable parameters (log axis), per mode
  memory_time.png          peak memory and training time per run
  learning_curves.png      training loss, and each curve benchmark's score during training, per mode
Variants (named runs) are in memory_time.png and the table, but left out of the other two, which
would otherwise be unreadable with a dozen runs.
Analysis (llava-ln analyze):
  layer_similarity.png     cosine similarity between layer representations per checkpoint, and the matrices
  grad_stats.png           gradient norm per step and its variance per logging window, per run
"""
import os

from llava_ln.core.atomic import atomic_path
from llava_ln.experiments.entries import column_label, eval_records, read_log, train_records

NO_MATPLOTLIB = "plots: none written, matplotlib is not installed (pip install 'llava-ln[demo]')"


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, figure, path: str) -> str:
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path


def comparison_plots(output_dir: str, payload: dict) -> list[str] | None:
    """The plots' paths; None without matplotlib."""
    plt = pyplot()
    entries = payload["modes"]
    if plt is None:
        return None
    if not entries:
        return []
    modes = {name: entry for name, entry in entries.items() if not entry.get("variant_of")} or entries
    return [score_vs_trainable(plt, modes, os.path.join(output_dir, "score_vs_trainable.png")),
            memory_time(plt, entries, os.path.join(output_dir, "memory_time.png")),
            learning_curves(plt, modes, os.path.join(output_dir, "learning_curves.png"))]


def score_vs_trainable(plt, entries: dict, path: str) -> str:
    benchmarks = list(next(iter(entries.values()))["scores"])
    panels = [("average", "average")] + [(b, column_label(b)) for b in benchmarks]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (key, title) in zip(axes.flat, panels):
        for name, entry in entries.items():
            value = entry["average"] if key == "average" else entry["scores"].get(key)
            if value is None:
                continue
            axis.scatter(max(entry["trainable"], 1), value, s=25)
            axis.annotate(name, (max(entry["trainable"], 1), value), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        axis.set_xscale("log")
        axis.margins(0.2)  # room for the labels
        axis.set_xlabel("trainable parameters", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=7)
    return _save(plt, figure, path)


def memory_time(plt, entries: dict, path: str) -> str:
    names = list(entries)
    figure, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.9 * len(names) * 2), 3.4))
    for axis, key, title in ((axes[0], "peak_memory_gib", "peak memory (GiB)"),
                             (axes[1], "wall_s", "training time (s)")):
        values = [entries[n][key] or 0.0 for n in names]
        bars = axis.bar(range(len(names)), values, color="#1f77b4")
        axis.bar_label(bars, fmt="%.2f" if key == "peak_memory_gib" else "%.0f", fontsize=7)
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
    return _save(plt, figure, path)


def learning_curves(plt, entries: dict, path: str) -> str:
    logs = {name: read_log(entry["run_dir"]) for name, entry in entries.items()}
    benchmarks = sorted({b for records in logs.values() for r in eval_records(records) for b in r["eval"]
                         if not b.endswith("_items")})
    panels = ["loss"] + benchmarks
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for name, records in logs.items():
            if panel == "loss":
                points = [(r["step"], r["loss"]) for r in train_records(records)]
            else:
                points = [(r["step"], r["eval"][panel]) for r in eval_records(records)
                          if r["eval"].get(panel) is not None]
            if points:
                # Markers on every curve: a short run logs a point or two, which a line alone does not show.
                axis.plot(*zip(*points), marker="o", markersize=3, label=name, linewidth=1)
        axis.set_title("training loss" if panel == "loss" else f"{column_label(panel)} (subset)",
                       fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    return _save(plt, figure, path)


def similarity_plot(plt, similarity: dict, path: str) -> str:
    """similarity: {checkpoint label: {"all_pairs", "adjacent", "image", "text", "matrix"}}."""
    names = list(similarity)
    figure, axes = plt.subplots(1, 1 + len(names), figsize=(4.2 + 3.0 * len(names), 3.4), squeeze=False)
    keys = ("all_pairs", "adjacent", "image", "text")
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        values = [similarity[name][k] if similarity[name][k] is not None else 0.0 for k in keys]
        axes[0][0].bar([k + index * width for k in range(len(keys))], values, width, label=name)
    axes[0][0].set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], keys, fontsize=7)
    axes[0][0].set_title("mean cosine similarity between layers", fontsize=9)
    axes[0][0].legend(fontsize=6)
    for axis, name in zip(axes[0][1:], names):
        image = axis.imshow(similarity[name]["matrix"], vmin=-1, vmax=1, cmap="viridis")
        layers = len(similarity[name]["matrix"])
        axis.set_xticks(range(layers), range(1, layers + 1))
        axis.set_yticks(range(layers), range(1, layers + 1))
        axis.set_title(name, fontsize=8)
        axis.set_xlabel("block", fontsize=7)
        axis.tick_params(labelsize=6)
    figure.colorbar(image, ax=axes[0][-1], fraction=0.046)
    return _save(plt, figure, path)


def grad_stats_plot(plt, series: dict, path: str) -> str:
    """series: {run: {"steps": [...], "norms": [...], "window_steps": [...], "window_var": [...]}} ("all" group)."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, values in series.items():
        axes[0].plot(values["steps"], values["norms"], linewidth=0.8, label=name)
        axes[1].plot(values["window_steps"], values["window_var"], marker=".", linewidth=0.8, label=name)
    axes[0].set_title("gradient norm per step (before clipping)", fontsize=9)
    axes[1].set_title("its variance per logging window", fontsize=9)
    for axis in axes:
        axis.set_yscale("log")
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    return _save(plt, figure, path)
