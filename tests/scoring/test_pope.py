"""POPE scoring: the first-sentence token rule, positional pairing, metrics and undefined cases.

Expectations are worked out by hand from docs/scoring.md §4.
"""
import json

import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import write_pope_answers
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
    with pytest.raises(LlavaLnError, match=r"'random': 1 of 4 labelled questions have no prediction \(first: 3\)"):
        score_pope({"random": (labels, answers)})
    split = score_pope({"random": (labels, answers)}, allow_missing=True)["splits"]["random"]
    assert split["pairing"] == "question_id" and split["missing"] == 1 and split["extra"] == 1
    # The missing id 3 (label yes) is scored as "no": a false negative, in the denominator.
    assert split["counts"] == {"TP": 1, "FP": 1, "TN": 1, "FN": 1}
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
    # Id 1 (label yes) answered "no": FN. Id 2 (label no) has no text: scored as the opposite, FP.
    assert fallback["splits"]["random"]["counts"] == {"TP": 0, "FP": 1, "TN": 0, "FN": 1}

    with pytest.raises(LlavaLnError, match="splits differ"):
        score_pope_files(ann, f"random={tmp_path}/random.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"question_id": 1, "text": "yes"}\n{oops\n')
    with pytest.raises(LlavaLnError, match="broken.jsonl line 2"):
        score_pope_files(str(tmp_path / "coco_pope_random.json"), str(tmp_path / "broken.jsonl"))


def test_missing_answers_are_refused_or_scored_as_the_opposite_of_the_label():
    labels = _labels(["yes", "yes", "no", "no"])
    answers = [{"question_id": 1, "text": "Yes"}, {"question_id": 3, "text": "No"}]  # 2 (yes) and 4 (no) missing
    with pytest.raises(LlavaLnError, match=r"2 of 4 labelled questions have no prediction \(first: 2, 4\)"):
        score_pope({"random": (labels, answers)})
    result = score_pope({"random": (labels, answers)}, allow_missing=True)
    split = result["splits"]["random"]
    # 1: TP, 3: TN, 2 (yes) scored "no": FN, 4 (no) scored "yes": FP. Leaving them out would give 1.0.
    assert split["counts"] == {"TP": 1, "FP": 1, "TN": 1, "FN": 1} and split["questions"] == 4
    assert (split["accuracy"], split["precision"], split["recall"], split["f1"], split["yes_ratio"]) == (
        0.5, 0.5, 0.5, 0.5, 0.5)
    assert split["missing"] == 2 and result["missing"] == 2


# Three splits whose question ids restart at 1, as in POPE's label files. The negatives differ:
# the model says "Yes" to every positive, to popular's "person" and to both adversarial negatives.
_SPLITS = {
    "random": ["kite", "boat"], "popular": ["person", "chair"], "adversarial": ["frisbee", "couch"]}
_SAYS_YES = {"dog", "cat", "person", "frisbee", "couch"}
_SUFFIX = "\nAnswer the question using a single word or phrase."


def _split_labels(negatives, first_id=1):
    objects = [("im1.jpg", "dog", "yes"), ("im1.jpg", negatives[0], "no"),
               ("im2.jpg", "cat", "yes"), ("im2.jpg", negatives[1], "no")]
    return [{"question_id": first_id + i, "image": image, "text": f"Is there a {thing} in the image?", "label": label}
            for i, (image, thing, label) in enumerate(objects)]


def _llava_answer(label, **extra):
    """An answer line as LLaVA's model_vqa_loader writes it (no split, no image)."""
    thing = label["text"].split()[3]
    return {"question_id": label["question_id"], "prompt": label["text"] + _SUFFIX,
            "text": "Yes" if thing in _SAYS_YES else "No", "answer_id": "x", "model_id": "m", "metadata": {}, **extra}


def _write_labels(tmp_path, first_ids=(1, 1, 1)):
    labels = {}
    for (split, negatives), first in zip(_SPLITS.items(), first_ids):
        labels[split] = _split_labels(negatives, first)
        (tmp_path / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in labels[split]))
    annotations = ",".join(f"{s}={tmp_path}/coco_pope_{s}.json" for s in _SPLITS)
    return labels, annotations


def _write_answers(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _assert_hand_scores(result, split_from):
    # random: TP 2, TN 2 -> F1 1. popular: TP 2, FP 1, TN 1 -> P 2/3, R 1, F1 0.8.
    # adversarial: TP 2, FP 2 -> P 1/2, R 1, F1 2/3, yes ratio 1.
    splits = result["splits"]
    assert {name: m["counts"] for name, m in splits.items()} == {
        "random": {"TP": 2, "FP": 0, "TN": 2, "FN": 0},
        "popular": {"TP": 2, "FP": 1, "TN": 1, "FN": 0},
        "adversarial": {"TP": 2, "FP": 2, "TN": 0, "FN": 0}}
    assert splits["popular"]["f1"] == pytest.approx(0.8) and splits["adversarial"]["yes_ratio"] == 1.0
    assert result["mean_f1"] == pytest.approx((1 + 0.8 + 2 / 3) / 3)
    assert all(m["split_from"] == split_from and m["missing"] == 0 for m in splits.values())


def test_combined_llava_file_is_split_by_the_one_order_of_label_files_that_fits(tmp_path):
    labels, annotations = _write_labels(tmp_path)
    # LLaVA's file order (adversarial, random, popular) differs from --annotations' order.
    rows = [_llava_answer(label) for split in ("adversarial", "random", "popular") for label in labels[split]]
    combined = _write_answers(tmp_path / "llava.jsonl", rows)
    result = score_pope_files(annotations, combined)
    _assert_hand_scores(result, "order")
    # The same file named for every split (what produced "pairing: question_id, extra: ..." before).
    every = ",".join(f"{s}={combined}" for s in _SPLITS)
    assert score_pope_files(annotations, every)["splits"] == result["splits"]
    # A folder of label files, as LLaVA's --annotation-dir.
    assert score_pope_files(str(tmp_path), combined)["mean_f1"] == result["mean_f1"]


def test_combined_file_without_anything_telling_the_split_is_refused(tmp_path):
    labels, annotations = _write_labels(tmp_path)
    rows = [{"question_id": r["question_id"], "text": "Yes"} for split in _SPLITS for r in labels[split]]
    combined = _write_answers(tmp_path / "bare.jsonl", rows)
    with pytest.raises(LlavaLnError, match="pass one file per split") as err:
        score_pope_files(annotations, combined)
    assert "--predictions random=random.jsonl,popular=popular.jsonl,adversarial=adversarial.jsonl" in str(err.value)
    assert "several orders of the label files fit it" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LlavaLnError, match="back to back"):  # one answer short: no order fits either
        score_pope_files(annotations, _write_answers(tmp_path / "short.jsonl", rows[:-1]))


def test_combined_file_split_from_each_answers_category(tmp_path):
    labels, annotations = _write_labels(tmp_path)
    # Interleaved splits and no prompts: only the "category" field can tell them apart.
    rows = [{"question_id": label["question_id"], "text": _llava_answer(label)["text"], "category": split}
            for i in range(4) for split, split_labels in labels.items() for label in split_labels[i:i + 1]]
    rows.append({"question_id": 1, "text": "Yes", "category": "some other split"})
    result = score_pope_files(annotations, _write_answers(tmp_path / "tagged.jsonl", rows))
    _assert_hand_scores(result, "category")
    assert result["unassigned_answers"] == 1


def test_combined_file_split_from_llava_question_file(tmp_path):
    labels, annotations = _write_labels(tmp_path)
    # llava_pope_test.jsonl numbers questions across the splits (1..12) and names each one's category.
    questions, rows = [], []
    for split in ("popular", "adversarial", "random"):
        for label in labels[split]:
            qid = len(questions) + 1
            questions.append({"question_id": qid, "image": label["image"], "text": label["text"] + _SUFFIX,
                              "category": split})
            rows.append({**_llava_answer(label), "question_id": qid})
    question_file = _write_answers(tmp_path / "llava_pope_test.jsonl", questions)
    answers = _write_answers(tmp_path / "answers.jsonl", rows)
    result = score_pope_files(annotations, answers, questions=question_file)
    _assert_hand_scores(result, "questions")
    assert all(m["id_mismatches"] == 0 for m in result["splits"].values())
    # Without the question file the prompts still place each block, though the ids are renumbered.
    by_order = score_pope_files(annotations, answers)
    _assert_hand_scores(by_order, "order")
    assert all(m["id_mismatches"] == 0 for m in by_order["splits"].values())
    # Missing answers are then found by split and id too: drop question 4 (popular's "chair", label no,
    # answered "No", a TN). Allowed, it is scored as the opposite of its label, "yes": TN 1 -> FP 2.
    short = _write_answers(tmp_path / "short.jsonl", [r for r in rows if r["question_id"] != 4])
    with pytest.raises(LlavaLnError, match=r"'popular': 1 of 4 labelled questions have no prediction \(first: 4\)"):
        score_pope_files(annotations, short, questions=question_file)
    popular = score_pope_files(annotations, short, questions=question_file, allow_missing=True)["splits"]["popular"]
    assert popular["counts"] == {"TP": 2, "FP": 2, "TN": 0, "FN": 0} and popular["missing"] == 1
    (tmp_path / "q_random_only.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions[:-1]))
    with pytest.raises(LlavaLnError, match="3 'random' questions but its label file has 4"):
        score_pope_files(annotations, answers, questions=str(tmp_path / "q_random_only.jsonl"))


def test_combined_file_split_from_question_ids_that_do_not_collide(tmp_path):
    labels, annotations = _write_labels(tmp_path, first_ids=(1, 101, 201))
    rows = [{"question_id": label["question_id"], "text": _llava_answer(label)["text"]}
            for split in ("popular", "random", "adversarial") for label in labels[split]]
    rows.append({"question_id": 999, "text": "Yes"})
    result = score_pope_files(annotations, _write_answers(tmp_path / "ids.jsonl", rows))
    _assert_hand_scores(result, "question_id")
    assert result["unassigned_answers"] == 1
    with pytest.raises(LlavaLnError, match=r"'random': 1 of 4 labelled questions have no prediction \(first: 3\)"):
        score_pope_files(annotations, _write_answers(tmp_path / "gap.jsonl", [r for r in rows if r["question_id"] != 3]))
