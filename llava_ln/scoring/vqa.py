"""VQAv2: local val accuracy as the official VQA evaluator computes it, and the EvalAI test-dev upload.

Accuracy (docs/scoring.md §2.2-2.3). Per question: whitespace clean-up; the unanimity gate (10
identical GT strings => exact, case-sensitive comparison, no normalization); otherwise both sides
normalized (vqa_normalize.py); then positional leave-one-out: acc = mean_i min(1, #{j != i : g_j == p} / 3).
Means are taken over unrounded accuracies and rounded only for reporting, half away from zero as
Python 2's `round` did (the official tool is Python 2 code; Python 3's `round` would send exact
ties such as 3.125 to even).

Where the official loader refuses a file we score it instead (docs/scoring.md §1.2-1.3):
annotated questions without a prediction are an error unless allow_missing, then they score 0;
predictions for unknown ids are counted and ignored; a repeated id keeps its last answer (as the
official index does); an answer that is not a string scores 0. All of these are counted.

Test-dev upload (docs/scoring.md §2.4): LLaVA's EvalAI answer processor (from MMF) normalizes
*every* answer, with no unanimity gate, and the upload lists every question id of the question
file, in order, with "" where there is no prediction, as LLaVA's convert_vqav2_for_submission.py does.
"""
from collections import defaultdict
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import (
    canonical_id,
    read_json,
    read_json_or_jsonl,
    refuse_missing,
    require_keys,
    require_list,
    write_json,
)
from llava_ln.scoring.vqa_normalize import (
    clean_whitespace,
    normalize_answer,
    process_digit_article,
    process_punctuation,
)

STANDARD_ANSWER_TYPES = ("yes/no", "number", "other")


def round_half_away(value: float, ndigits: int = 2) -> float:
    """Python 2 `round`: the exact binary value rounded to ndigits, ties away from zero."""
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def question_accuracy(prediction: str, gt_answers: list) -> float:
    """Accuracy of one prediction against the human answers (any count >= 1; VQAv2 has 10)."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one ground-truth answer")
    prediction = clean_whitespace(prediction)
    gts = [clean_whitespace(answer) for answer in gt_answers]
    if len(set(gts)) > 1:  # the unanimity gate: only disagreeing annotators trigger normalization
        gts = [normalize_answer(answer) for answer in gts]
        prediction = normalize_answer(prediction)
    total = 0.0
    for leave_out in range(len(gts)):
        matches = sum(1 for j, answer in enumerate(gts) if j != leave_out and answer == prediction)
        total += min(1, float(matches) / 3)
    return total / len(gts)


def _mean_percent(values: list):
    """round(100 * sum / count, 2) in the official order of operations; None for no questions."""
    if not values:
        return None
    return round_half_away(100 * float(sum(values)) / len(values), 2)


def score_vqa(annotations: list, predictions: dict, counts: dict | None = None, allow_missing: bool = False,
              where: str = "VQAv2 predictions") -> dict:
    """Score predictions {question_id: answer} against annotation records.

    Each annotation is {"question_id", "answers": [str, ...], "answer_type", "question_type"}
    (answers already reduced to their strings). Annotated ids without a prediction are an
    error unless allow_missing (then they score 0). A prediction that is None or not a string
    scores 0 and is counted as invalid.
    """
    counts = dict(counts or {})
    annotated_ids = {record["question_id"] for record in annotations}
    refuse_missing(where, [r["question_id"] for r in annotations if r["question_id"] not in predictions],
                   len(annotations), "annotated questions", allow_missing)
    accuracies, by_answer_type, by_question_type = [], defaultdict(list), defaultdict(list)
    missing = invalid = 0
    for record in annotations:
        if record["question_id"] not in predictions:
            missing += 1
            accuracy = 0.0
        else:
            answer = predictions[record["question_id"]]
            if isinstance(answer, str):
                accuracy = question_accuracy(answer, record["answers"])
            else:
                invalid += 1
                accuracy = 0.0
        accuracies.append(accuracy)
        if record.get("answer_type") is not None:
            by_answer_type[record["answer_type"]].append(accuracy)
        if record.get("question_type") is not None:
            by_question_type[record["question_type"]].append(accuracy)

    per_answer_type = {name: _mean_percent(values) for name, values in by_answer_type.items()}
    result = {"overall": _mean_percent(accuracies)}
    for name in STANDARD_ANSWER_TYPES:
        result[name] = per_answer_type.get(name)
    result["per_answer_type"] = per_answer_type
    result["per_question_type"] = {name: _mean_percent(values) for name, values in sorted(by_question_type.items())}
    counts.update({
        "questions": len(annotations),
        "answered": len(annotations) - missing,
        "missing": missing,
        "invalid_answers": counts.get("invalid_answers", 0) + invalid,
        "extra": sum(1 for qid in predictions if qid not in annotated_ids),
    })
    result["counts"] = counts
    notes = []
    if missing:
        notes.append(f"{missing} annotated question(s) have no prediction and score 0 (--allow_missing)")
    if counts["extra"]:
        notes.append(f"{counts['extra']} prediction(s) name question ids absent from the annotations and were ignored")
    if notes:
        result["notes"] = notes
    return result


def load_vqa_annotations(path: str) -> list:
    """Annotation records with answers reduced to strings; malformed records name their id."""
    payload = read_json(path, "VQA annotations")
    records, seen = [], set()
    for index, raw in enumerate(require_list(payload, path, "VQA annotations", key="annotations")):
        qid = canonical_id(raw.get("question_id")) if isinstance(raw, dict) else None
        where = f"VQA annotations file {path}, record {index}"
        if qid is None:
            raise LlavaLnError(f"{where} has no usable question_id")
        answers = raw.get("answers")
        if not isinstance(answers, list) or not answers or not all(
            isinstance(item, dict) and isinstance(item.get("answer"), str) for item in answers
        ):
            raise LlavaLnError(f"{where} (question_id {qid}) needs a non-empty 'answers' list of {{'answer': str}}")
        if qid in seen:
            raise LlavaLnError(f"{where}: question_id {qid} appears twice")
        seen.add(qid)
        records.append({
            "question_id": qid,
            "answers": [item["answer"] for item in answers],
            "answer_type": raw.get("answer_type"),
            "question_type": raw.get("question_type"),
        })
    return records


def load_question_ids(path: str, what: str = "VQA questions") -> list:
    """Question ids in file order from an official questions file ({"questions": [...]}) or a list."""
    payload = read_json_or_jsonl(path, what)
    ids = []
    for index, raw in enumerate(require_list(payload, path, what, key="questions")):
        qid = canonical_id(raw.get("question_id")) if isinstance(raw, dict) else None
        if qid is None:
            raise LlavaLnError(f"{what} file {path}, record {index} has no usable question_id")
        ids.append(qid)
    return ids


def load_vqa_predictions(path: str) -> tuple[dict, dict]:
    """({question_id: answer}, counts) from a results file [{"question_id", "answer"}].

    LLaVA's JSON-lines answer files ({"question_id", "text"} per line) are read too. A repeated
    id keeps its last answer, as the official index does; records without a usable question_id
    are skipped. Both are counted.
    """
    payload = read_json_or_jsonl(path, "VQA predictions")
    predictions, duplicates, unusable = {}, 0, 0
    for raw in require_list([payload] if isinstance(payload, dict) else payload, path, "VQA predictions"):
        qid = canonical_id(raw.get("question_id")) if isinstance(raw, dict) else None
        if qid is None:
            unusable += 1
            continue
        if qid in predictions:
            duplicates += 1
        predictions[qid] = raw["answer"] if "answer" in raw else raw.get("text")
    return predictions, {"duplicate_ids": duplicates, "records_without_id": unusable}


def score_vqa_files(annotations_path: str, predictions_path: str, questions_path: str | None = None,
                    allow_missing: bool = False) -> dict:
    """Score a results file against the official annotation (and, optionally, question) files."""
    annotations = load_vqa_annotations(annotations_path)
    if questions_path:
        question_ids = set(load_question_ids(questions_path))
        unknown = [record["question_id"] for record in annotations if record["question_id"] not in question_ids]
        if unknown:
            raise LlavaLnError(
                f"VQA annotations file {annotations_path} has {len(unknown)} question id(s) absent from "
                f"questions file {questions_path} (first: {unknown[0]}); are they the same split?"
            )
    predictions, counts = load_vqa_predictions(predictions_path)
    return score_vqa(annotations, predictions, counts, allow_missing=allow_missing,
                     where=f"VQAv2 predictions file {predictions_path}")


# --- test-dev upload ----------------------------------------------------------------------------

def evalai_process_answer(answer: str) -> str:
    """The answer string EvalAI receives for one prediction (LLaVA's processor; Unicode digits)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    text = process_punctuation(text, unicode_digits=True)
    return process_digit_article(text)


def build_testdev_upload(question_ids: list, predictions: dict) -> tuple[list, dict]:
    """(upload rows [{"question_id", "answer"}] in question order, counts).

    predictions maps question_id -> raw model answer; a missing id, or an answer that is not a
    string, is uploaded as "". Missing ids are normal here: test-dev is a subset of the test
    question file the upload must cover, so they are counted, never refused.
    """
    rows, answered, invalid = [], 0, 0
    for qid in question_ids:
        answer = predictions.get(qid)
        if isinstance(answer, str):
            answered += 1
            rows.append({"question_id": qid, "answer": evalai_process_answer(answer)})
        else:
            invalid += qid in predictions
            rows.append({"question_id": qid, "answer": ""})
    known = set(question_ids)
    counts = {
        "questions": len(question_ids),
        "answered": answered,
        "missing": len(question_ids) - answered - invalid,
        "invalid_answers": invalid,
        "extra": sum(1 for qid in predictions if qid not in known),
    }
    return rows, counts


def write_vqav2_testdev_upload(path: str, question_file: str, predictions) -> dict:
    """Write the EvalAI upload for every question id in question_file; returns the counts.

    question_file is the official test2015/test-dev questions JSON ({"questions": [...]}) or a
    JSON-lines file with a question_id per line (LLaVA's llava_vqav2_mscoco_test2015.jsonl).
    predictions is {question_id: raw answer} or rows {"question_id", "answer"}.
    """
    if isinstance(predictions, Mapping):
        answers = {canonical_id(qid): answer for qid, answer in predictions.items()}
    else:
        answers = {}
        for index, row in enumerate(predictions):
            require_keys(row, ("question_id", "answer"), "VQA prediction", index)
            answers[canonical_id(row["question_id"])] = row["answer"]
    rows, counts = build_testdev_upload(load_question_ids(question_file, "VQAv2 test questions"), answers)
    write_json(path, rows)
    return counts
