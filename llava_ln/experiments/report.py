"""The demo report: a markdown table of measured scores and a PNG chart, side by side per model."""
import os

from llava_ln.core.atomic import atomic_path


def markdown_report(rows: dict, timings: dict, recipe, world: str) -> str:
    """rows: {model label: {metric label: value}}; timings: {step: seconds}."""
    models = list(rows)
    metrics = list(next(iter(rows.values())))
    lines = [
        "# llava-ln demo report",
        "",
        f"Toy world `{world}` (seed {recipe.seed}). Stage 1 trains the connector on captions; stage 2 tunes "
        f"`--tune_mode {recipe.tune_mode}` on instruction data ({recipe.stage2_data}). Both models are asked the "
        "same prompts in the same conversation template; every number below was measured in this run by "
        "`llava-ln eval --score` (official scoring rules).",
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(f"{rows[m][metric]:.2f}" for m in models) + " |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in timings.items()]
    lines.append("")
    return "\n".join(lines)


def chart(rows: dict, path: str) -> str | None:
    """One small bar chart per metric (their scales differ); returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = list(rows)
    metrics = list(next(iter(rows.values())))
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4))
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


def write_report(output_dir: str, rows: dict, timings: dict, recipe, world: str) -> dict:
    text = markdown_report(rows, timings, recipe, world)
    md_path = os.path.join(output_dir, "report.md")
    with atomic_path(md_path, ".md") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    png = chart(rows, os.path.join(output_dir, "report.png"))
    return {"markdown": md_path, "chart": png, "text": text}
