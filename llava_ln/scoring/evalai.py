"""VQAv2 test-dev upload: LLaVA's EvalAI answer processor and full-coverage upload (metrics.md §1.4).

The processor (from LLaVA's m4c_evaluator, itself from MMF) normalizes *every* answer, with no
unanimity gate: lower-case; delete "," and "?"; "'s" -> " 's"; strip; tabs/newlines -> spaces and
strip; the VQA punctuation step; the VQA digit/article step. It runs under Python 3, so its digit
tests match any Unicode digit. "A" and "the" become "" (LLaVA issue #618).

The upload lists every question id of the question file, in that order, with "" for questions
that have no prediction, as LLaVA's convert_vqav2_for_submission.py does.
"""
from llava_ln.scoring.vqa_normalize import clean_whitespace, process_digit_article, process_punctuation


def evalai_process_answer(answer: str) -> str:
    """The answer string EvalAI receives for one prediction."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    text = process_punctuation(text, unicode_digits=True)
    return process_digit_article(text)


def build_testdev_upload(question_ids: list, predictions: dict) -> tuple[list, dict]:
    """(upload rows [{"question_id", "answer"}] in question order, counts).

    predictions maps question_id -> raw model answer; a missing id, or an answer that is not a
    string, is uploaded as "".
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
