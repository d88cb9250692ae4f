"""The files between generation and scoring: readers, the official-format writers, the missing-answer rule.

Readers turn every failure into a LlavaLnError naming the file (and line, for JSON lines).
Writers produce the formats the official tools read, atomically (a temp file in the same folder,
then os.replace), so an interrupted run never leaves a half-written file for a later score:

  write_vqa_results(path, rows)              [{"question_id", "answer"}] (VQA results JSON)
  write_mme_subtask_files(directory, rows)   <subtask>.txt lines image\\tquestion\\tgt\\tresponse
  write_pope_answers(path, rows)             JSON lines {"question_id", "text", ...}
  write_caption_results(path, rows)          [{"image_id", "caption"}] (COCO results JSON)
(The VQAv2 test-dev upload writer lives with the EvalAI processor in vqa.py.)

`refuse_missing` is the one rule every benchmark applies to ground-truth items without a
prediction (docs/scoring.md §1.2): an error naming how many and the first ids, unless the caller
allows them, in which case the benchmark scores them as wrong.
"""
import json
import os
from collections.abc import Mapping

from llava_ln.core import bounded_json
from llava_ln.core.atomic import atomic_path
from llava_ln.core.errors import LlavaLnError

_MME_FIELD_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})
_IDS_SHOWN = 5


# --- readers -------------------------------------------------------------------------------------

def _require_file(path: str, what: str) -> None:
    if not path:
        raise LlavaLnError(f"no {what} file given")
    if not os.path.isfile(path):
        raise LlavaLnError(f"{what} file not found: {path}")


def read_json(path: str, what: str):
    """The parsed content of a JSON file."""
    _require_file(path, what)
    return bounded_json.read_json(path, f"{what} file", max_bytes=None)


def read_jsonl(path: str, what: str) -> list:
    """One parsed object per non-blank line; a bad line is reported with its line number."""
    _require_file(path, what)
    text = bounded_json.read_text(path, f"{what} file", max_bytes=None)
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(bounded_json.loads(line, f"{what} file {path} line {line_number}"))
    return records


def read_json_or_jsonl(path: str, what: str):
    """A JSON document, or a list of records when the file is JSON lines (LLaVA writes both)."""
    _require_file(path, what)
    text = bounded_json.read_text(path, f"{what} file", max_bytes=None)
    try:
        return bounded_json.loads(text, f"{what} file {path}")
    except bounded_json.JsonLimitError as err:
        if "not valid JSON" not in str(err):
            raise
        return read_jsonl(path, what)


def read_records(path: str, what: str) -> list:
    """The records of a JSON-lines file or a JSON list (a lone object counts as one record)."""
    payload = read_json_or_jsonl(path, what)
    records = [payload] if isinstance(payload, dict) else payload
    if not isinstance(records, list):
        raise LlavaLnError(f"{what} file {path} must hold JSON lines or a JSON list of records")
    return records


def require_list(payload, path: str, what: str, key: str | None = None) -> list:
    """payload itself (or payload[key]) as a list, else an error saying what shape was expected."""
    if key is not None and isinstance(payload, dict):
        if key not in payload:
            raise LlavaLnError(f"{what} file {path} has no {key!r} list")
        payload = payload[key]
    if not isinstance(payload, list):
        expected = f"a JSON list or an object with a {key!r} list" if key else "a JSON list"
        raise LlavaLnError(f"{what} file {path} must hold {expected}, found {type(payload).__name__}")
    return payload


def canonical_id(value):
    """Ids compare as ints when they are ints or digit strings ("42" == 42); None when unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isascii() and stripped.isdigit():
            return int(stripped)
        return stripped or None
    return None


# --- the missing-prediction rule -----------------------------------------------------------------

def refuse_missing(where: str, missing: list, total: int, unit: str, allow_missing: bool) -> None:
    """Raise the one-line error for ground-truth items without a prediction, unless they are allowed.

    missing lists the ids (or "file line N" labels) of those items, in ground-truth order.
    """
    if not missing or allow_missing:
        return
    shown = ", ".join(str(item) for item in missing[:_IDS_SHOWN]) + (", ..." if len(missing) > _IDS_SHOWN else "")
    raise LlavaLnError(
        f"{where}: {len(missing)} of {total} {unit} have no prediction (first: {shown}); "
        "pass --allow_missing to score them as wrong (docs/scoring.md §1.2)"
    )


# --- writers -------------------------------------------------------------------------------------

def write_json(path: str, payload) -> None:
    """Atomically write one JSON document (compact, as the official tools' inputs are)."""
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.write("\n")


def require_keys(row, keys: tuple, what: str, index: int) -> None:
    if not isinstance(row, Mapping) or any(key not in row for key in keys):
        raise ValueError(f"{what} row {index} must be a mapping with keys {keys}, got {row!r}")


def write_vqa_results(path: str, rows) -> int:
    """Write the official VQA results list from rows {"question_id", "answer"}; returns the count."""
    results = []
    for index, row in enumerate(rows):
        require_keys(row, ("question_id", "answer"), "VQA result", index)
        results.append({"question_id": row["question_id"], "answer": row["answer"]})
    write_json(path, results)
    return len(results)


def sanitize_mme_field(text: str) -> str:
    """Newlines, carriage returns and tabs become spaces: the eval tool reads one line, four tab fields."""
    return str(text).translate(_MME_FIELD_BREAKS)


def write_mme_subtask_files(directory: str, rows) -> dict:
    """Write one `<subtask>.txt` per subtask from rows {"subtask", "image", "question", "ground_truth", "response"}.

    Row order is kept within each subtask: give the official question order so that the two
    questions of an image sit on consecutive lines. Returns {subtask: line count}.
    """
    by_subtask = {}
    for index, row in enumerate(rows):
        require_keys(row, ("subtask", "image", "question", "ground_truth", "response"), "MME", index)
        name = str(row["subtask"])
        if not name or os.sep in name or name.startswith("."):
            raise ValueError(f"MME row {index}: subtask {name!r} cannot be a file name")
        fields = (row["image"], row["question"], row["ground_truth"], row["response"])
        by_subtask.setdefault(name, []).append("\t".join(sanitize_mme_field(field) for field in fields) + "\n")
    os.makedirs(directory, exist_ok=True)
    for name, lines in by_subtask.items():
        with atomic_path(os.path.join(directory, name + ".txt"), ".txt") as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(lines)
    return {name: len(lines) for name, lines in by_subtask.items()}


def write_pope_answers(path: str, rows) -> int:
    """Write one split's answers as JSON lines, in label-file order (POPE pairs by position).

    Each row needs "question_id" and "text"; other keys (prompt, image, category, ...) are kept.
    """
    lines = []
    for index, row in enumerate(rows):
        require_keys(row, ("question_id", "text"), "POPE answer", index)
        lines.append(json.dumps(dict(row)) + "\n")
    with atomic_path(path, ".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
    return len(lines)


def write_caption_results(path: str, rows) -> int:
    """Write the COCO results list from rows {"image_id", "caption"}; one caption per image."""
    results, seen = [], set()
    for index, row in enumerate(rows):
        require_keys(row, ("image_id", "caption"), "caption result", index)
        if row["image_id"] in seen:
            raise ValueError(f"caption result row {index}: image_id {row['image_id']} appears twice")
        seen.add(row["image_id"])
        results.append({"image_id": row["image_id"], "caption": row["caption"]})
    write_json(path, results)
    return len(results)
