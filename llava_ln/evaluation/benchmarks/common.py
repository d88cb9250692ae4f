"""What every benchmark reader shares: the item it yields, the prompt rules, and finding official files.

EvalItem is one thing to generate an answer for, whatever the benchmark. Prompts follow LLaVA-1.5:
VQAv2, MME and POPE questions get the short-answer suffix on a new line (LLaVA's question files
already carry it; the official files do not, so it is added only when missing); captioning has no
question, the prompt is a one-sentence caption request, as LLaVA-style harnesses use for COCO and
Flickr30k. File lookups in a benchmark's official layout fail with one line naming the flag and
the path; an image name taken from a question or annotation file must stay inside the image folder.
"""
import os
from dataclasses import dataclass, field

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.images import ImageError, resolve_image_path


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


SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."


def with_suffix(question: str, suffix: str) -> str:
    """question + newline + suffix; unchanged when the suffix is empty or already ends the question."""
    question = question.strip()
    if not suffix or question.endswith(suffix):
        return question
    return f"{question}\n{suffix}"


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class DataFlags:
    """The data-location flags of `llava-ln eval` (see commands/eval.py for their help)."""

    data: str | None = None
    question_file: str | None = None
    annotation_file: str | None = None
    image_folder: str | None = None
    split: str | None = None
    upload_question_file: str | None = None


def reject_unused(flags: DataFlags, benchmark: str, used: tuple) -> None:
    """A flag the benchmark does not read is an error, not silently ignored."""
    for name in ("question_file", "annotation_file", "split", "upload_question_file"):
        if getattr(flags, name) and name not in used:
            raise LlavaLnError(f"--{name} is not used by --benchmark {benchmark}")


def require_file(path: str, flag: str) -> str:
    if not os.path.isfile(path):
        raise LlavaLnError(f"{flag}: file not found: {path}")
    return os.path.abspath(path)


def require_dir(path: str, flag: str) -> str:
    if not os.path.isdir(path):
        raise LlavaLnError(f"{flag}: folder not found: {path}")
    return os.path.abspath(path)


def data_root(flags: DataFlags, benchmark: str, needed_for: str) -> str:
    if not flags.data:
        raise LlavaLnError(f"--benchmark {benchmark} needs --data (the benchmark folder) or {needed_for}")
    return require_dir(flags.data, "--data")


def first_existing(root: str, candidates, kind: str = "file") -> str | None:
    """The first of root/candidate that exists (as a file or a folder), else None."""
    check = os.path.isfile if kind == "file" else os.path.isdir
    for candidate in candidates:
        path = os.path.join(root, candidate)
        if check(path):
            return os.path.abspath(path)
    return None


def image_file(folder: str, name: str, where: str) -> str:
    """folder/name, which must exist and lie inside folder; `where` names the question that needs it."""
    if not isinstance(name, str) or not name.strip():
        raise LlavaLnError(f"{where}: the image name {name!r} is not a file name")
    try:
        path = resolve_image_path(folder, name)
    except ImageError as err:
        raise LlavaLnError(f"{where}: {err}") from None
    if not os.path.isfile(path):
        raise LlavaLnError(f"{where}: image file not found: {path}")
    return os.path.abspath(path)


def image_with_stem(folder: str, stem: str, where: str) -> str:
    """The image in folder whose name is stem plus an image extension (MME pairs x.txt with x.jpg/x.png)."""
    for extension in IMAGE_EXTENSIONS:
        for candidate in (stem + extension, stem + extension.upper()):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return os.path.abspath(path)
    raise LlavaLnError(f"{where}: no image named {stem}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}> in {folder}")
