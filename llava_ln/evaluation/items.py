"""EvalItem: one thing to generate an answer for, whatever the benchmark."""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvalItem:
    """A question (or a captioning request) about one image.

    key: unique within a benchmark run; answers are stored and found again under it (restarts).
    image: absolute path of the image file.
    prompt: the user's text after the image, answer-format suffix included.
    group: the split or subtask the item belongs to ("" when the benchmark has none).
    record: the benchmark-specific fields the official output files need (ids, ground truth, ...).
    """

    key: str
    image: str
    prompt: str
    group: str = ""
    record: dict = field(default_factory=dict)
