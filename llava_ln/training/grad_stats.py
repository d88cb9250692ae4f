"""Gradient statistics per optimizer group (--log_grad_stats): the norm at every step and its spread.

The strategy measures each group's gradient norm after the step's last backward and before
clipping (Strategy.grad_group_norms); this module collects those norms between two log lines and
turns them into the `grad_stats` entry of a log.jsonl record:

    "grad_stats": {"norms_no_decay": {"norms": [0.41, 0.38, ...], "mean": 0.395, "var": 0.0002}, ...,
                   "all": {...}}

`norms` holds one value per optimizer step of the window (the steps since the previous log line),
`var` their population variance over that window, and "all" the same for the norm of every
trainable gradient together (what clipping sees). `llava-ln analyze` plots them.
"""
import math

ALL = "all"


def combined_norm(norms: dict[str, float]) -> float:
    """The norm of all groups' gradients together, from the groups' norms."""
    return math.sqrt(sum(value * value for value in norms.values()))


def mean_and_variance(values: list[float]) -> tuple[float, float]:
    """Mean and population variance (the window is the whole population we describe)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, sum((value - mean) ** 2 for value in values) / len(values)


class GradStatsWindow:
    """Per-group gradient norms of the optimizer steps since the last log line."""

    def __init__(self):
        self.norms: dict[str, list[float]] = {}

    def add(self, group_norms: dict[str, float]) -> None:
        """One optimizer step's norms. A step with a non-finite norm is left out: the step guard skips it
        (no update), and one inf would make the window's variance meaningless."""
        total = combined_norm(group_norms)
        if not math.isfinite(total):
            return
        for name, value in {**group_norms, ALL: total}.items():
            self.norms.setdefault(name, []).append(float(value))

    def record(self) -> dict:
        """The log record's entry; empty when nothing was added (the flag is off)."""
        if not self.norms:
            return {}
        stats = {}
        for name, values in self.norms.items():
            mean, variance = mean_and_variance(values)
            stats[name] = {"norms": values, "mean": mean, "var": variance}
        return {"grad_stats": stats}
