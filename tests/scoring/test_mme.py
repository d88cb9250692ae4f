"""MME scoring: the 4-character parse, consecutive-line pairing, acc + acc+, the sums.

Expectations are worked out by hand from docs/scoring.md §3.
"""
import pytest

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import write_mme_subtask_files
from llava_ln.scoring.mme import (
    ALL_SUBTASKS,
    COGNITION,
    PERCEPTION,
    parse_mme_response,
    score_mme,
    score_mme_dir,
    score_mme_subtask,
)


@pytest.mark.parametrize("response, expected", [
    ("Yes, there is a dog.", "yes"), ("YES", "yes"), (" yes", "yes"), ("  yes", "other"),
    ("The answer is yes", "other"), ("There is no dog.", "other"),
    ("Nope", "no"), ("none", "no"), ("Nothing", "no"), ("Not sure", "no"), ("No way", "no"),
    ("know", "no"), ("snow", "no"), ("eyes", "yes"), ("nyes", "yes"), ("noyes", "no"),
    ("Yeah", "other"), ("y", "other"), ("", "other"),
])
def test_four_character_parse(response, expected):
    assert parse_mme_response(response) == expected
    assert parse_mme_response(response + "\n") == expected  # the newline the tool reads never matters


def test_subtask_acc_and_acc_plus():
    pairs = [("Yes", "Yes"), ("No", "No"),        # image 1: both right
             ("Yes", "Yes"), ("No", "yes"),       # image 2: one right
             ("Yes", "maybe"), ("No", "no")]      # image 3: "other" + right
    result = score_mme_subtask(pairs)
    assert result["acc"] == pytest.approx(4 / 6) and result["acc_plus"] == pytest.approx(1 / 3)
    assert result["score"] == pytest.approx(100.0) and result["other"] == 1


def test_all_other_subtask_scores_zero():
    result = score_mme_subtask([("yes", "maybe"), ("no", "dunno")] * 3)
    assert (result["score"], result["acc"], result["acc_plus"], result["other"]) == (0.0, 0.0, 0.0, 6)


def test_subtask_errors():
    with pytest.raises(ValueError, match="even"):
        score_mme_subtask([("yes", "yes")] * 3)
    with pytest.raises(ValueError, match="neither"):
        score_mme_subtask([("maybe", "yes"), ("no", "no")])


def _lines(image, rows):
    return "".join(f"{image}\tq{i}\t{gt}\t{resp}\n" for i, (gt, resp) in enumerate(rows))


def test_pairing_is_by_consecutive_lines_not_image_names(tmp_path):
    # Image A is answered right twice, image B wrong twice, but the lines alternate A, B, A, B:
    # the pairs (A, B) and (A, B) each have one right answer, so acc+ is 0 (by image it would be 0.5).
    text = "A.jpg\tq1\tYes\tYes\nB.jpg\tq1\tYes\tNo\nA.jpg\tq2\tNo\tNo\nB.jpg\tq2\tNo\tYes\n"
    (tmp_path / "existence.txt").write_text(text)
    result = score_mme_dir(str(tmp_path))
    assert result["details"]["existence"]["acc_plus"] == 0.0
    assert result["subtasks"]["existence"] == pytest.approx(50.0)


def _write_all(directory, skip=(), damaged=None):
    perfect = [("Yes", "Yes"), ("No", "No")] * 2
    for name in ALL_SUBTASKS:
        if name in skip:
            continue
        rows = perfect if name != damaged else [("Yes", "Yes"), ("No", "No"), ("Yes", "Yes"), ("No", "Yes")]
        if name in COGNITION[1:]:
            rows = [("Yes", "unsure"), ("No", "unsure")] * 2
        (directory / f"{name}.txt").write_text(_lines("img.png", rows))


def test_perception_cognition_sums_and_eight_subtask_variant(tmp_path):
    # Perception: nine perfect subtasks (200 each) + OCR with one miss of four (75 + 50 = 125).
    # Cognition: commonsense perfect (200), the other three all "other" (0).
    _write_all(tmp_path, damaged="OCR")
    result = score_mme_dir(str(tmp_path))
    assert result["perception"] == pytest.approx(9 * 200 + 125)
    assert result["cognition"] == pytest.approx(200)
    assert result["total"] == pytest.approx(2125)
    assert result["unparsed_answers"] == 12 and result["missing_subtasks"] == []
    eight = score_mme_dir(str(tmp_path), perception_subtasks=8)
    assert eight["perception"] == pytest.approx(8 * 200)  # artwork and OCR left out
    assert eight["cognition"] == result["cognition"]


def test_missing_extra_blank_and_bad_files(tmp_path):
    _write_all(tmp_path, skip=("artwork", "code_reasoning"))
    (tmp_path / "notes.txt").write_text(_lines("x", [("yes", "yes"), ("no", "no")]))
    with open(tmp_path / "scene.txt", "a") as handle:
        handle.write("\n")
    result = score_mme_dir(str(tmp_path))
    assert result["missing_subtasks"] == ["artwork", "code_reasoning"]
    assert result["extra_subtasks"] == ["notes"] and result["blank_lines"] == 1
    assert result["perception"] == pytest.approx(9 * 200)

    (tmp_path / "color.txt").write_text(_lines("c", [("yes", "yes")] * 3))
    with pytest.raises(LlavaLnError, match="color.txt"):
        score_mme_dir(str(tmp_path))
    (tmp_path / "color.txt").write_text("only\tthree\tfields\n")
    with pytest.raises(LlavaLnError, match="color.txt line 1"):
        score_mme_dir(str(tmp_path))
    with pytest.raises(LlavaLnError, match="not found"):
        score_mme_dir(str(tmp_path / "absent"))


def test_writer_sanitizes_responses_and_round_trips(tmp_path):
    rows = []
    for name in PERCEPTION[:2]:
        rows += [
            {"subtask": name, "image": "a.jpg", "question": "Is it? Please answer yes or no.",
             "ground_truth": "Yes", "response": "Yes\r\nthere\tis"},
            {"subtask": name, "image": "a.jpg", "question": "Is it not?", "ground_truth": "No", "response": "No\n"},
        ]
    assert write_mme_subtask_files(str(tmp_path), rows) == {"existence": 2, "count": 2}
    lines = (tmp_path / "existence.txt").read_text().splitlines()
    assert lines[0] == "a.jpg\tIs it? Please answer yes or no.\tYes\tYes  there is"
    result = score_mme_dir(str(tmp_path))
    assert result["subtasks"] == {"existence": 200.0, "count": 200.0}


def test_pure_scoring_of_a_partial_set():
    result = score_mme({"existence": [("yes", "yes"), ("no", "no")]})
    assert result["perception"] == 200.0 and result["cognition"] == 0
    assert len(result["missing_subtasks"]) == 13 and result["empty_subtasks"] == []


def test_unfilled_template_line_is_a_missing_answer(tmp_path):
    # Line 2 is the eval tool's template line with no response field.
    (tmp_path / "existence.txt").write_text("A.jpg\tq1\tYes\tYes\nA.jpg\tq2\tNo\nB.jpg\tq1\tYes\tNo\nB.jpg\tq2\tNo\tNo\n")
    with pytest.raises(LlavaLnError, match=r"1 of 4 questions have no prediction \(first: existence.txt line 2\)"):
        score_mme_dir(str(tmp_path))
    result = score_mme_dir(str(tmp_path), allow_missing=True)
    # A: right + missing ("other", wrong); B: wrong + right -> acc 2/4, acc+ 0/2 -> 50.
    assert result["subtasks"]["existence"] == pytest.approx(50.0)
    assert result["missing"] == 1 and result["details"]["existence"]["missing"] == 1
    assert result["unparsed_answers"] == 0  # a missing answer is counted as missing, not as unparsed
    with pytest.raises(LlavaLnError, match="existence question 2"):
        score_mme({"existence": [("Yes", "Yes"), ("No", None)]})


def test_ground_truth_templates_fix_the_questions_and_their_order(tmp_path):
    templates, answers = tmp_path / "Your_Results", tmp_path / "answers"
    templates.mkdir()
    answers.mkdir()
    (templates / "existence.txt").write_text("A.jpg\tq1\tYes\nA.jpg\tq2\tNo\nB.jpg\tq1\tYes\nB.jpg\tq2\tNo\n")
    (templates / "count.txt").write_text("C.jpg\tq1\tYes\nC.jpg\tq2\tNo\n")
    # Image A answered right twice, B wrong twice, written interleaved, plus a line the templates lack.
    (answers / "existence.txt").write_text(
        "A.jpg\tq1\tYes\tYes\nB.jpg\tq1\tYes\tNo\nA.jpg\tq2\tNo\tNo\nB.jpg\tq2\tNo\tYes\nZ.jpg\tqz\tYes\tYes\n")
    with pytest.raises(LlavaLnError, match=r"2 of 6 questions have no prediction \(first: count.txt line 1, "
                                           r"count.txt line 2\)"):
        score_mme_dir(str(answers), annotations=str(templates))
    result = score_mme_dir(str(answers), annotations=str(templates), allow_missing=True)
    # Template order pairs A (both right) and B (none): acc 1/2, acc+ 1/2 -> 100 (file order would give 50).
    assert result["subtasks"] == {"existence": pytest.approx(100.0), "count": 0.0}
    assert result["perception"] == pytest.approx(100.0) and result["missing"] == 2 and result["extra_answers"] == 1
    (answers / "existence.txt").write_text("A.jpg\tq1\tNo\tYes\n")
    with pytest.raises(LlavaLnError, match=r"existence.txt line 1: ground truth 'No' but .*existence.txt line 1"):
        score_mme_dir(str(answers), annotations=str(templates), allow_missing=True)
