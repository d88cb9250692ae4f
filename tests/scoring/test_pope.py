"""POPE scoring: the first-sentence token rule, positional pairing, metrics and undefined cases.

Expectations are worked out by hand from shared/docs/metrics.md §3.
"""
import json

import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.formats import write_pope_answers
from llava_ln.scoring.pope import parse_pope_answer, pope_metrics, score_pope, score_pope_files


@pytest.mark.parametrize("text, expected", [
    ("no", "no"), ("No", "no"), ("No, there is not.", "no"), ("There is not a cat", "no"),
    ("Yes, no doubt", "no"),           # the comma is deleted, leaving the token "no"
    ("NO", "yes"), ("Not at all", "yes"), ("No!", "yes"), ("Nope", "yes"),
    ("There isn't a cat.", "yes"), ("Nothing", "yes"), ("", "yes"), ("no\nthere is", "yes"),
    ("Yes,no doubt", "yes"),           # comma deletion glues "Yesno"
    ("Yes. There is no cat.", "yes"),  # only the first sentence counts
    ("3.5 no", "yes"),                 # the cut happens at the decimal point
])
def test_first_sentence_rule(text, expected):
    assert parse_pope_answer(text) == expected


def test_metrics_by_hand():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    answers = ["yes", "yes", "no", "yes", "no", "no"]  # TP 2, FN 1, FP 1, TN 2
    m = pope_metrics(labels, answers)
    assert m["counts"] == {"TP": 2, "FP": 1, "TN": 2, "FN": 1}
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(0.5) and "undefined" not in m


def test_label_other_than_no_is_positive():
    assert pope_metrics(["Yes", "No"], ["yes", "yes"])["counts"] == {"TP": 2, "FP": 0, "TN": 0, "FN": 0}


def test_no_yes_predicted_marks_precision_undefined_and_f1_zero():
    m = pope_metrics(["yes", "no"], ["no", "no"])  # TP + FP = 0: the official code divides by zero
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == 0.5 and m["yes_ratio"] == 0.0 and m["undefined"] == ["precision"]


def test_precision_plus_recall_zero_and_fully_undefined():
    m = pope_metrics(["yes", "no"], ["no", "yes"])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    m = pope_metrics(["no", "no"], ["no", "no"])
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None and m["accuracy"] == 1.0
    m = pope_metrics([], [])
    assert m["accuracy"] is None and m["yes_ratio"] is None


def _labels(labels):
    return [{"question_id": i + 1, "image": f"{i}.jpg", "text": "Is there a cat?", "label": lab}
            for i, lab in enumerate(labels)]


def test_pairing_by_position_and_fallback_by_id():
    labels = _labels(["yes", "no", "yes", "no"])
    # Equal counts: positional, even though ids 3 and 4 are swapped (counted, not fixed).
    answers = [{"question_id": q, "text": t} for q, t in [(1, "Yes"), (2, "No"), (4, "No"), (3, "Yes")]]
    split = score_pope({"random": (labels, answers)})["splits"]["random"]
    assert split["pairing"] == "position" and split["id_mismatches"] == 2
    assert split["counts"] == {"TP": 1, "FP": 1, "TN": 1, "FN": 1}
    # Different counts: pairing falls back to question_id; one missing, one extra.
    # Id 2 is answered twice (the last answer, "yes", counts), 3 is missing, 9 is unknown.
    answers = [{"question_id": q, "text": t} for q, t in [(1, "Yes"), (2, "No"), (4, "No"), (9, "Yes"), (2, "yes")]]
    split = score_pope({"random": (labels, answers)})["splits"]["random"]
    assert split["pairing"] == "question_id" and split["missing"] == 1 and split["extra"] == 1
    assert split["counts"] == {"TP": 1, "FP": 1, "TN": 1, "FN": 0}
    with pytest.raises(LlavaLnError, match="question_id"):
        score_pope({"random": (labels, [{"text": "yes"}])})


def test_mean_f1_over_splits():
    labels = _labels(["yes", "no"])
    result = score_pope({
        "random": (labels, [{"text": "yes"}, {"text": "no"}]),            # F1 1
        "popular": (labels, [{"text": "yes"}, {"text": "yes"}]),          # P 1/2, R 1 -> F1 2/3
    })
    assert result["mean_f1"] == pytest.approx((1 + 2 / 3) / 2)
    undefined = score_pope({"adversarial": (_labels(["no"]), [{"text": "no"}])})
    assert undefined["mean_f1"] is None


def test_files_split_pairs_and_errors(tmp_path):
    for split, texts in {"random": ["Yes", "No"], "popular": ["Yes", "Yes"]}.items():
        (tmp_path / f"coco_pope_{split}.json").write_text(
            "".join(json.dumps(r) + "\n" for r in _labels(["yes", "no"])))
        rows = [{"question_id": i + 1, "text": t} for i, t in enumerate(texts)]
        assert write_pope_answers(str(tmp_path / f"{split}.jsonl"), rows) == 2
    ann = ",".join(f"{s}={tmp_path}/coco_pope_{s}.json" for s in ("random", "popular"))
    pred = ",".join(f"{s}={tmp_path}/{s}.jsonl" for s in ("popular", "random"))
    result = score_pope_files(ann, pred)
    assert result["splits"]["random"]["f1"] == 1.0 and result["splits"]["popular"]["yes_ratio"] == 1.0
    single = score_pope_files(str(tmp_path / "coco_pope_random.json"), str(tmp_path / "random.jsonl"))
    assert list(single["splits"]) == ["random"]

    (tmp_path / "answer_key.jsonl").write_text('{"question_id": 1, "answer": "no"}\n{"question_id": 2}\n')
    fallback = score_pope_files(str(tmp_path / "coco_pope_random.json"), str(tmp_path / "answer_key.jsonl"))
    assert fallback["splits"]["random"]["invalid_answers"] == 1
    assert fallback["splits"]["random"]["counts"] == {"TP": 0, "FP": 0, "TN": 0, "FN": 1}

    with pytest.raises(LlavaLnError, match="splits differ"):
        score_pope_files(ann, f"random={tmp_path}/random.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"question_id": 1, "text": "yes"}\n{oops\n')
    with pytest.raises(LlavaLnError, match="broken.jsonl line 2"):
        score_pope_files(str(tmp_path / "coco_pope_random.json"), str(tmp_path / "broken.jsonl"))
