"""Writers for every prediction file the benchmarks use, so generation and scoring share one format.

All writes are atomic (temp file in the same folder, then os.replace), so an interrupted run
never leaves a half-written file that a later scoring run would read.

  write_vqa_results(path, rows)                       [{"question_id", "answer"}] (VQA results JSON)
  write_vqav2_testdev_upload(path, question_file, predictions)   EvalAI upload covering every id
  write_mme_subtask_files(directory, rows)            <subtask>.txt, image\\tquestion\\tgt\\tresponse
  write_pope_answers(path, rows)                      JSON lines {"question_id", "text", ...}
  write_caption_results(path, rows)                   [{"image_id", "caption"}] (COCO results JSON)
"""
import json
import os
from collections.abc import Mapping

from llava_ln.core.atomic import atomic_path
from llava_ln.scoring.evalai import build_testdev_upload
from llava_ln.scoring.jsonio import canonical_id
from llava_ln.scoring.vqa import load_question_ids

_MME_FIELD_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


def _write_json(path: str, payload) -> None:
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.write("\n")


def _require_keys(row, keys: tuple, what: str, index: int) -> None:
    if not isinstance(row, Mapping) or any(key not in row for key in keys):
        raise ValueError(f"{what} row {index} must be a mapping with keys {keys}, got {row!r}")


def write_vqa_results(path: str, rows) -> int:
    """Write the official VQA results list from rows {"question_id", "answer"}; returns the count."""
    results = []
    for index, row in enumerate(rows):
        _require_keys(row, ("question_id", "answer"), "VQA result", index)
        results.append({"question_id": row["question_id"], "answer": row["answer"]})
    _write_json(path, results)
    return len(results)


def write_vqav2_testdev_upload(path: str, question_file: str, predictions) -> dict:
    """Write the EvalAI upload for every question id in question_file; returns the counts.

    question_file is the official test2015/test-dev questions JSON ({"questions": [...]}) or a
    JSON-lines file with a question_id per line (LLaVA's llava_vqav2_mscoco_test2015.jsonl).
    predictions is {question_id: raw answer} or rows {"question_id", "answer"}; every answer goes
    through the EvalAI processor and missing ids get "".
    """
    if isinstance(predictions, Mapping):
        answers = {canonical_id(qid): answer for qid, answer in predictions.items()}
    else:
        answers = {}
        for index, row in enumerate(predictions):
            _require_keys(row, ("question_id", "answer"), "VQA prediction", index)
            answers[canonical_id(row["question_id"])] = row["answer"]
    rows, counts = build_testdev_upload(load_question_ids(question_file, "VQAv2 test questions"), answers)
    _write_json(path, rows)
    return counts


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
        _require_keys(row, ("subtask", "image", "question", "ground_truth", "response"), "MME", index)
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

    Each row needs "question_id" and "text"; other keys (prompt, model id, ...) are kept.
    """
    lines = []
    for index, row in enumerate(rows):
        _require_keys(row, ("question_id", "text"), "POPE answer", index)
        lines.append(json.dumps(dict(row)) + "\n")
    with atomic_path(path, ".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
    return len(lines)


def write_caption_results(path: str, rows) -> int:
    """Write the COCO results list from rows {"image_id", "caption"}; one caption per image."""
    results, seen = [], set()
    for index, row in enumerate(rows):
        _require_keys(row, ("image_id", "caption"), "caption result", index)
        if row["image_id"] in seen:
            raise ValueError(f"caption result row {index}: image_id {row['image_id']} appears twice")
        seen.add(row["image_id"])
        results.append({"image_id": row["image_id"], "caption": row["caption"]})
    _write_json(path, results)
    return len(results)
