"""`llava-ln score` end to end: flags, the headline line (the JSON with --json, and in its file), counts, and
one-line errors."""
import json

import pytest

from llava_ln.cli import main as cli_main
from llava_ln.scoring.files import write_mme_subtask_files, write_pope_answers, write_vqa_results


def _run(argv, capsys):
    """Its exit code, stdout and stderr, asked for the whole JSON on stdout (--json)."""
    code = cli_main(["score", *argv, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def vqa_files(tmp_path):
    answers = {1: ["yes"] * 10, 2: ["2"] * 2 + ["3"] * 8, 3: ["red"] * 10}
    types = {1: "yes/no", 2: "number", 3: "other"}
    (tmp_path / "ann.json").write_text(json.dumps({"annotations": [
        {"question_id": q, "answer_type": types[q], "question_type": "what",
         "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(ans)]} for q, ans in answers.items()]}))
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"question_id": q} for q in (1, 2, 3, 4)]}))
    write_vqa_results(str(tmp_path / "res.json"), [{"question_id": 1, "answer": "Yes"},
                                                   {"question_id": 2, "answer": "two"},
                                                   {"question_id": 7, "answer": "stray"}])
    return tmp_path


def test_vqav2_scores_counts_and_upload(vqa_files, capsys):
    d = vqa_files
    argv = ["--benchmark", "vqav2", "--questions", str(d / "q.json"), "--annotations", str(d / "ann.json"),
            "--predictions", str(d / "res.json"), "--upload_file", str(d / "up.json"),
            "--output_file", str(d / "score.json")]
    code, out, err = _run(argv, capsys)  # q3 has no prediction: refused by default
    assert code == 2 and out == "" and "1 of 3 annotated questions have no prediction (first: 3)" in err
    code, out, _ = _run([*argv, "--allow_missing"], capsys)
    assert code == 0
    result = json.loads(out)
    # q1: "Yes" vs unanimous "yes" -> 0 (gate); q2: "two" -> "2", 2 matches -> 0.6; q3 missing -> 0.
    assert result["overall"] == 20.0
    assert (result["yes/no"], result["number"], result["other"]) == (0.0, 60.0, 0.0)
    assert result["counts"]["missing"] == 1 and result["counts"]["extra"] == 1
    assert result["upload"]["questions"] == 4 and result["upload"]["answered"] == 2
    assert json.loads((d / "up.json").read_text())[:2] == [{"question_id": 1, "answer": "yes"},
                                                         {"question_id": 2, "answer": "2"}]
    assert json.loads((d / "score.json").read_text()) == result


def test_mme_flags(tmp_path, capsys):
    rows = [{"subtask": "existence", "image": "a.jpg", "question": "q", "ground_truth": gt, "response": r}
            for gt, r in [("Yes", "Yes"), ("No", "No")]]
    rows += [{"subtask": "artwork", "image": "b.jpg", "question": "q", "ground_truth": gt, "response": r}
             for gt, r in [("Yes", "Yes"), ("No", "Yes")]]
    write_mme_subtask_files(str(tmp_path), rows)
    _, out, _ = _run(["--benchmark", "mme", "--predictions", str(tmp_path)], capsys)
    result = json.loads(out)
    assert result["perception"] == 200 + 50 and result["subtasks"]["artwork"] == 50.0
    _, out, _ = _run(["--benchmark", "mme", "--predictions", str(tmp_path), "--mme_subtasks", "8"], capsys)
    assert json.loads(out)["perception"] == 200


def test_pope_split_pairs(tmp_path, capsys):
    labels = [{"question_id": i, "image": "x.jpg", "text": "Is there a cat?", "label": lab}
              for i, lab in enumerate(["yes", "no", "yes", "no"], start=1)]
    (tmp_path / "adv.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    write_pope_answers(str(tmp_path / "ans.jsonl"), [{"question_id": i, "text": t} for i, t in
                                                     enumerate(["Yes.", "No, there is not.", "No", "Yes, no doubt"], 1)])
    _, out, _ = _run(["--benchmark", "pope", "--annotations", f"adversarial={tmp_path}/adv.jsonl",
                      "--predictions", f"adversarial={tmp_path}/ans.jsonl"], capsys)
    split = json.loads(out)["splits"]["adversarial"]
    # answers: yes, no, no, no -> TP 1, TN 2, FN 1, FP 0
    assert (split["accuracy"], split["precision"], split["recall"], split["yes_ratio"]) == (0.75, 1.0, 0.5, 0.25)
    assert split["f1"] == pytest.approx(2 / 3) and json.loads(out)["mean_f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "mme", "--predictions", "{d}/nope"], "nope"),
    (["--benchmark", "vqav2", "--annotations", "{d}/bad.json", "--predictions", "{d}/bad.json"], "bad.json is not valid JSON"),
    (["--benchmark", "pope", "--predictions", "{d}/bad.json"], "needs --annotations"),
    (["--benchmark", "vqav2", "--predictions", "{d}/bad.json"], "needs --annotations"),
    (["--benchmark", "mme", "--predictions", "{d}", "--colour", "red"], "unknown flag"),
    (["--benchmark", "coco_caption", "--annotations", "{d}/missing.json", "--predictions", "{d}/bad.json"],
     "missing.json"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, argv, message):
    (tmp_path / "bad.json").write_text("{truncated")
    code, out, err = _run([a.format(d=tmp_path) for a in argv], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_vqav2_accepts_llava_jsonl_answers(vqa_files, capsys):
    d = vqa_files
    (d / "answers.jsonl").write_text('{"question_id": 3, "text": "Red"}\n{"question_id": 1, "text": "yes"}\n')
    _, out, _ = _run(["--benchmark", "vqav2", "--annotations", str(d / "ann.json"),
                      "--predictions", str(d / "answers.jsonl"), "--allow_missing"], capsys)
    result = json.loads(out)
    # q1 "yes" exact -> 1; q3 "Red" vs unanimous "red" -> 0 (no normalization); q2 missing.
    assert result["overall"] == pytest.approx(33.33) and result["counts"]["missing"] == 1


def test_files_saved_with_a_byte_order_mark_read_as_without(vqa_files, capsys):
    """Editors on Windows start UTF-8 files with a BOM, which json refuses ('Expecting value' at line 1)."""
    d = vqa_files
    (d / "answers.jsonl").write_text('\ufeff{"question_id": 1, "text": "yes"}\n{"question_id": 3, "text": "red"}\n',
                                     encoding="utf-8")
    (d / "ann_bom.json").write_bytes(b"\xef\xbb\xbf" + (d / "ann.json").read_bytes())
    code, out, err = _run(["--benchmark", "vqav2", "--annotations", str(d / "ann_bom.json"),
                           "--predictions", str(d / "answers.jsonl"), "--allow_missing"], capsys)
    assert code == 0, err
    assert json.loads(out)["overall"] == pytest.approx(66.67)


def test_non_finite_values_become_null():
    from llava_ln.scoring.dispatch import _json_safe

    assert _json_safe({"SPICE": float("nan"), "x": [1.0, float("inf")]}) == {"SPICE": None, "x": [1.0, None]}


def test_allow_missing_is_a_request_field_and_a_flag():
    from llava_ln.scoring.dispatch import ScoreRequest

    request = ScoreRequest(benchmark="pope", annotations="labels/", predictions="all.jsonl",
                           questions="llava_pope_test.jsonl", allow_missing=True)
    assert request.command_line() == ["--benchmark", "pope", "--annotations", "labels/", "--predictions", "all.jsonl",
                                      "--questions", "llava_pope_test.jsonl", "--allow_missing"]
    assert "--allow_missing" not in ScoreRequest(benchmark="mme", predictions="d").command_line()


def test_mme_missing_answer_through_the_cli(tmp_path, capsys):
    (tmp_path / "existence.txt").write_text("A.jpg\tq1\tYes\tYes\nA.jpg\tq2\tNo\n")
    code, out, err = _run(["--benchmark", "mme", "--predictions", str(tmp_path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "existence.txt line 2" in err
    code, out, _ = _run(["--benchmark", "mme", "--predictions", str(tmp_path), "--allow_missing"], capsys)
    result = json.loads(out)
    assert code == 0 and result["missing"] == 1 and result["subtasks"]["existence"] == 50.0  # acc 1/2, acc+ 0


def test_score_prints_one_headline_line_and_writes_the_json_beside_the_predictions(vqa_files, capsys):
    argv = ["score", "--benchmark", "vqav2", "--annotations", str(vqa_files / "ann.json"),
            "--predictions", str(vqa_files / "res.json"), "--allow_missing"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    written = vqa_files / "scores.json"
    assert out == f"vqav2: VQA accuracy (%) 20.00 (n=3 questions); full results: {written}\n"
    assert json.loads(written.read_text())["counts"]["questions"] == 3
    elsewhere = vqa_files / "elsewhere.json"
    assert cli_main([*argv, "--output_file", str(elsewhere)]) == 0
    assert capsys.readouterr().out.endswith(f"full results: {elsewhere}\n") and elsewhere.is_file()


def test_the_default_scores_file_sits_beside_the_predictions(tmp_path):
    from llava_ln.commands.evaluate import default_scores_file

    assert default_scores_file(str(tmp_path / "res.json")) == str(tmp_path / "scores.json")
    assert default_scores_file(str(tmp_path / "mme_answers")) == str(tmp_path / "scores.json")  # a folder: its parent
    pope = f"adversarial={tmp_path}/a/ans.jsonl,random={tmp_path}/b/ans.jsonl"
    assert default_scores_file(pope) == str(tmp_path / "a" / "scores.json")
