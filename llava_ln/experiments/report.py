"""The demo report: a markdown table of measured scores beside the reference numbers, the recipe, and a PNG chart."""
import os

from llava_ln.core.atomic import atomic_path
from llava_ln.experiments.recipe import DEMO_REFERENCE


def markdown_report(rows: dict, timings: dict, recipe, world: str, eval_counts: dict | None = None) -> str:
    """rows: {model label: {metric label: value}}; timings: {step: seconds}; eval_counts: the evaluation sets'
    sizes (the toy world manifest's counts). The recipe and the reference numbers (recipe.DEMO_REFERENCE)
    are printed with the run's own, so a shortened run's report cannot pass for the real one."""
    models = list(rows)
    metrics = list(next(iter(rows.values())))
    references = {f"reference: {label}": values for label, values in DEMO_REFERENCE.items()}
    reference_note = ("the same as the reference's" if recipe.is_reference() else
                      "NOT the reference's (its numbers are the default recipe's, for orientation only)")
    lines = [
        "# llava-ln demo report",
        "",
        f"Toy world `{world}` (seed {recipe.seed}). Stage 1 trains the connector on captions; stage 2 tunes "
        f"`--tune_mode {recipe.tune_mode}` on instruction data ({recipe.stage2_data}). Both models are asked the "
        "same prompts in the same conversation template; every number below was measured in this run by "
        "`llava-ln eval --score` (official scoring rules), except the reference columns: README.md's numbers, "
        "measured with the default recipe.",
        "",
        f"This run's recipe is {reference_note}.",
        "",
        "| metric | " + " | ".join(models + list(references)) + " |",
        "|---|" + "---|" * (len(models) + len(references)),
    ]
    for metric in metrics:
        cells = [f"{rows[m][metric]:.2f}" for m in models]
        cells += [f"{values[metric]:.2f}" if metric in values else "" for values in references.values()]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_setting(value)} |" for key, value in recipe.summary().items()]
    if eval_counts:
        sizes = ", ".join(f"{key} {value}" for key, value in eval_counts.items()
                          if not key.startswith(("pretrain", "instruct")))
        lines.append(f"| evaluation sets | {sizes} |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in timings.items()]
    lines.append("")
    return "\n".join(lines)


def _setting(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {item:g}" if isinstance(item, float) else f"{key} {item}"
                         for key, item in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def chart(rows: dict, path: str) -> str | None:
    """One small bar chart per metric (their scales differ); returns the path, or None without matplotlib."""
    from llava_ln.experiments.plots import pyplot

    plt = pyplot()
    if plt is None:
        return None
    models = list(rows)
    metrics = list(next(iter(rows.values())))
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    axes = axes[0]  # one row; squeeze=False keeps it a list when a single benchmark was evaluated
    colours = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for axis, metric in zip(axes, metrics):
        values = [rows[m][metric] for m in models]
        bars = axis.bar(range(len(models)), values, color=colours[: len(models)])
        axis.set_title(metric, fontsize=9)
        axis.set_xticks(range(len(models)), models, fontsize=8)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_ylim(0, max(values + [1e-9]) * 1.25)
    figure.suptitle("llava-ln on the toy world: untuned (connector only) vs stage 2", fontsize=10)
    figure.tight_layout()
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return path


def write_report(output_dir: str, rows: dict, timings: dict, recipe, world: str,
                 eval_counts: dict | None = None) -> dict:
    text = markdown_report(rows, timings, recipe, world, eval_counts)
    md_path = os.path.join(output_dir, "report.md")
    with atomic_path(md_path, ".md") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    png = chart(rows, os.path.join(output_dir, "report.png"))
    return {"markdown": md_path, "chart": png, "text": text}
