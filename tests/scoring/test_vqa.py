"""VQAv2 scoring: normalization steps, unanimity gate, leave-one-out, aggregation, EvalAI upload.

Every expectation below is worked out by hand from docs/scoring.md §2.
"""
import json

import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import write_vqa_results
from llava_ln.scoring.vqa import (
    build_testdev_upload,
    evalai_process_answer,
    question_accuracy,
    round_half_away,
    score_vqa,
    score_vqa_files,
    write_vqav2_testdev_upload,
)
from llava_ln.scoring.vqa_normalize import (
    CONTRACTIONS,
    process_digit_article,
    process_punctuation,
)


@pytest.mark.parametrize("text, expected", [
    ("yes, it is", "yes it is"),      # "," next to a space: deleted
    ("red,white", "red white"),       # no space beside it: becomes a space
    ("T-Shirt", "T Shirt"),
    ("1,000", "1000"),                # digit-comma-digit forces deletion
    ("1,000-2,000", "10002000"),      # ...of every mark, the hyphen too
    ("10:30", "10:30"),               # ":" is not in the set
    ("man's", "man's"),               # nor is the apostrophe
    ("3.5", "3.5"),
    ("a.m.", "am"),
    ("3.5.", "3.5"),
    ("what?!", "what  "),             # "?" and "!" each become a space
    ("(left) side", " left side"),    # ") " is in the text: ")" deleted; "(" has no space beside it
])
def test_punctuation_step(text, expected):
    assert process_punctuation(text) == expected


def test_at_most_32_periods_are_deleted():
    out = process_punctuation("a." * 40)
    assert out == "a" * 32 + "a." * 8


def test_digit_comma_test_is_ascii_for_the_val_tool_and_unicode_for_evalai():
    arabic = "\u0661,\u0662"  # Arabic-Indic 1,2
    assert process_punctuation(arabic) == "\u0661 \u0662"
    assert process_punctuation(arabic, unicode_digits=True) == "\u0661\u0662"


@pytest.mark.parametrize("text, expected", [
    ("None", "0"), ("Two dogs", "2 dogs"), ("ten", "10"), ("eleven", "eleven"),
    ("A", ""), ("the cat", "cat"), ("an  apple pie", "apple pie"),
    ("dont", "don't"), ("couldnt've", "couldn't've"), ("couldn'tve", "couldn't've"),
    ("couldntve", "couldntve"),       # missing both apostrophes: no key
    ("lets", "lets"), ("shes", "shes"),
    ("somebody'd", "somebodyd"),      # the backwards entry
    ("Im", "im"), ("Ive", "ive"),     # capitalized keys never match after lower-casing
    ("twas", "'twas"), ("oclock", "o'clock"), ("yall'd've", "y'all'd've"),
])
def test_digit_article_step(text, expected):
    assert process_digit_article(text) == expected


def test_contraction_table_has_the_official_118_entries():
    assert len(CONTRACTIONS) == 118
    assert CONTRACTIONS["hadnt've"] == CONTRACTIONS["hadn'tve"] == "hadn't've"
    assert "hadntve" not in CONTRACTIONS
    assert CONTRACTIONS["Id've"] == CONTRACTIONS["I'dve"] == "I'd've"


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_k_matching_annotators(k, expected):
    gts = ["2"] * k + ["3"] * (10 - k) if k else ["3"] * 5 + ["4"] * 5
    assert question_accuracy("2", gts) == pytest.approx(expected, abs=1e-9)


def test_unanimity_gate_skips_normalization():
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    for near_miss in ("Yes", "yes.", "a yes"):
        assert question_accuracy(near_miss, ["yes"] * 10) == 0.0
    assert question_accuracy("two", ["2"] * 10) == 0.0
    # One dissenting annotator switches normalization on for both sides.
    assert question_accuracy("Yes.", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)
    assert question_accuracy("two", ["2"] * 9 + ["3"]) == pytest.approx(1.0)


def test_whitespace_cleanup_happens_before_the_gate():
    # After clean-up all ten are "yes": the gate applies and "Yes" is an exact-match miss.
    assert question_accuracy("Yes", ["yes"] * 9 + ["yes\t"]) == 0.0
    assert question_accuracy(" yes\n", ["yes"] * 10) == 1.0


def test_normalized_matches():
    assert question_accuracy("none", ["0"] * 5 + ["1"] * 5) == pytest.approx(1.0)
    assert question_accuracy("a dog", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    assert question_accuracy("1,000", ["1000"] * 2 + ["many"] * 8) == pytest.approx(0.6)
    assert question_accuracy("dont", ["don't"] * 4 + ["no"] * 6) == pytest.approx(1.0)


def test_leave_one_out_with_three_annotators():
    # i=0 (the match) sees 0 others matching, i=1 and i=2 see one: (0 + 1/3 + 1/3) / 3.
    assert question_accuracy("a", ["cat", "b", "c"]) == 0.0
    assert question_accuracy("cat", ["cat", "b", "c"]) == pytest.approx(2 / 9)


def _ann(qid, answers, answer_type="other", question_type="what is"):
    return {"question_id": qid, "answers": answers, "answer_type": answer_type, "question_type": question_type}


def test_aggregation_rounds_half_away_from_zero_like_python2():
    # 1 right out of 32: 100 * 1 / 32 = 3.125 exactly; Python 2 rounds it to 3.13 (Python 3: 3.12).
    annotations = [_ann(i, ["yes"] * 10, "yes/no") for i in range(32)]
    predictions = {0: "yes", **{i: "no" for i in range(1, 32)}}
    result = score_vqa(annotations, predictions)
    assert result["overall"] == 3.13 and result["yes/no"] == 3.13
    assert result["number"] is None and result["other"] is None
    assert round_half_away(2.675, 2) == 2.67  # the binary value is below the tie


def test_per_type_means_and_counts():
    annotations = [
        _ann(1, ["yes"] * 10, "yes/no", "is the"),
        _ann(2, ["2"] * 3 + ["3"] * 7, "number", "how many"),
        _ann(3, ["red"] * 10, "other", "what color is the"),
        _ann(4, ["blue"] * 10, "other", "what color is the"),
    ]
    predictions = {1: "yes", 2: "two", 3: "red", 99: "stray"}  # 4 missing, 99 extra
    with pytest.raises(LlavaLnError, match=r"1 of 4 annotated questions have no prediction \(first: 4\)"):
        score_vqa(annotations, predictions)
    result = score_vqa(annotations, predictions, allow_missing=True)
    # accuracies 1, 0.9, 1, 0 -> overall 72.5; other = (1 + 0) / 2
    assert result["overall"] == 72.5
    assert (result["yes/no"], result["number"], result["other"]) == (100.0, 90.0, 50.0)
    assert result["per_question_type"]["what color is the"] == 50.0
    assert result["counts"]["missing"] == 1 and result["counts"]["extra"] == 1
    assert result["counts"]["answered"] == 3 and "notes" in result


def test_files_duplicates_invalid_and_errors(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [
        {"question_id": 1, "answer_type": "yes/no", "question_type": "is",
         "answers": [{"answer": "yes", "answer_id": i} for i in range(1, 11)]},
        {"question_id": 2, "answer_type": "other", "question_type": "what",
         "answers": [{"answer": "cat", "answer_id": i} for i in range(1, 11)]},
    ]}))
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"questions": [{"question_id": 1}, {"question_id": 2}]}))
    res = tmp_path / "res.json"
    write_vqa_results(str(res), [{"question_id": 1, "answer": "no"}, {"question_id": 1, "answer": "yes"},
                                 {"question_id": 2, "answer": None}])
    result = score_vqa_files(str(ann), str(res), str(questions))
    assert result["overall"] == 50.0  # last answer for id 1 wins; a null answer scores 0
    assert result["counts"]["duplicate_ids"] == 1 and result["counts"]["invalid_answers"] == 1

    questions.write_text(json.dumps({"questions": [{"question_id": 1}]}))
    with pytest.raises(LlavaLnError, match="q.json"):
        score_vqa_files(str(ann), str(res), str(questions))
    res.write_text("[{not json")
    with pytest.raises(LlavaLnError, match="res.json"):
        score_vqa_files(str(ann), str(res))
    with pytest.raises(LlavaLnError, match="nowhere.json"):
        score_vqa_files(str(tmp_path / "nowhere.json"), str(res))


@pytest.mark.parametrize("raw, expected", [
    ("A", ""), ("the", ""), ("Man's hat", "man 's hat"), ("It's", "it 's"),
    ("1,000-2,000", "1000 2000"),   # commas go first, so the digit-comma rule never fires
    ("Two, dogs!", "2 dogs"), ("\tNone\n", "0"), ("Yes?", "yes"), ("dont", "don't"),
])
def test_evalai_answer_processor(raw, expected):
    assert evalai_process_answer(raw) == expected


def test_testdev_upload_covers_every_question(tmp_path):
    rows, counts = build_testdev_upload([3, 1, 2], {1: "A dog", 3: "Two", 9: "x"})
    assert rows == [{"question_id": 3, "answer": "2"}, {"question_id": 1, "answer": "dog"},
                    {"question_id": 2, "answer": ""}]
    assert counts == {"questions": 3, "answered": 2, "missing": 1, "invalid_answers": 0, "extra": 1}

    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps({"question_id": q, "text": "?"}) + "\n" for q in (5, 6)))
    out = tmp_path / "upload.json"
    counts = write_vqav2_testdev_upload(str(out), str(jsonl), [{"question_id": 6, "answer": "The Cat."}])
    assert json.loads(out.read_text()) == [{"question_id": 5, "answer": ""}, {"question_id": 6, "answer": "cat"}]
    assert counts["missing"] == 1


def test_missing_predictions_refused_or_scored_zero():
    annotations = [_ann(1, ["yes"] * 10, "yes/no"), _ann(2, ["red"] * 10, "other"),
                   _ann(3, ["2"] * 3 + ["3"] * 7, "number")]
    predictions = {1: "yes", 3: "2", 8: "extra"}
    with pytest.raises(LlavaLnError, match=r"1 of 3 annotated questions have no prediction \(first: 2\); "
                                           r"pass --allow_missing"):
        score_vqa(annotations, predictions)
    result = score_vqa(annotations, predictions, allow_missing=True)
    # 1 + 0 (missing) + 0.9 over 3 questions = 63.33; extra ids stay counted, never fatal.
    assert result["overall"] == 63.33 and result["other"] == 0.0
    assert (result["counts"]["missing"], result["counts"]["extra"]) == (1, 1)
    many = [_ann(i, ["yes"] * 10, "yes/no") for i in range(1, 9)]
    with pytest.raises(LlavaLnError, match=r"8 of 8 annotated questions have no prediction \(first: 1, 2, 3, 4, 5, \.\.\.\)"):
        score_vqa(many, {})
