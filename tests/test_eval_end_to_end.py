"""End to end: `llava-ln eval` then scoring, for all five benchmarks, on mini sets in the official layouts.

The scores are whatever a random model gets; the assertions are about the files (official
formats, official order, every question covered) and the scorer's JSON (keys and counts).
Caption scoring runs Java (PTB tokenizer, METEOR), so only COCO is scored through it; the
Flickr30k results are checked with the scorer's own readers.
"""
import json
import os

import pytest
from eval_helpers import eval_cli, session_assets, single_thread

from llava_ln.errors import LlavaLnError
from llava_ln.scoring.caption import load_caption_annotations, load_caption_predictions

COMMON = ("--max_new_tokens", "5", "--batch_size", "4", "--device", "cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_llm, tiny_vision):
    return session_assets(tmp_path_factory, tiny_llm, tiny_vision)


def run(capsys, assets, benchmark, out, *extra):
    return eval_cli(capsys, "--benchmark", benchmark, "--model_path", assets["run"], "--output_dir", str(out), *COMMON,
                    *extra)


def test_mme(capsys, assets, tmp_path):
    summary = run(capsys, assets, "mme", tmp_path, "--data", assets["data"]["mme"], "--score")
    folder = summary["files"]["mme_results"]
    assert sorted(os.listdir(folder)) == ["artwork.txt", "existence.txt"]
    for subtask, image_ext in (("artwork", ".jpg"), ("existence", ".png")):
        lines = open(os.path.join(folder, f"{subtask}.txt"), encoding="utf-8").read().split("\n")
        assert lines[-1] == "" and len(lines) == 5
        fields = [line.split("\t") for line in lines[:-1]]
        assert all(len(f) == 4 for f in fields)
        # Pairs of consecutive lines are one image, Yes then No as in the question files.
        assert [f[0] for f in fields[0::2]] == [f[0] for f in fields[1::2]]
        assert all(f[0].endswith(image_ext) for f in fields)
        assert [f[2] for f in fields] == ["Yes", "No", "Yes", "No"]
        assert all(f[1].endswith("Please answer yes or no.") for f in fields)  # the added suffix is not written
    scores = summary["scores"]
    assert {"perception", "cognition", "subtasks"} <= set(scores)
    assert set(scores["subtasks"]) == {"artwork", "existence"}
    assert all(d["questions"] == 4 and d["images"] == 2 for d in scores["details"].values())
    assert json.load(open(tmp_path / "scores.json")) == scores


def test_vqav2_val_results_and_score(capsys, assets, tmp_path):
    data = assets["data"]["vqav2"]
    summary = run(capsys, assets, "vqav2", tmp_path, "--data", data, "--score")
    questions = json.load(open(os.path.join(data, "v2_OpenEnded_mscoco_val2014_questions.json")))["questions"]
    results = json.load(open(summary["files"]["results"]))
    assert [r["question_id"] for r in results] == [q["question_id"] for q in questions]
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in results)
    assert "upload" not in summary["files"]  # val split: scored locally, nothing to upload
    scores = summary["scores"]
    assert {"overall", "yes/no", "number", "other"} <= set(scores)
    assert scores["counts"]["questions"] == scores["counts"]["answered"] == len(questions)
    assert scores["counts"]["missing"] == scores["counts"]["extra"] == 0


def test_vqav2_test_dev_upload_covers_every_test_question(capsys, assets, tmp_path):
    data = assets["data"]["vqav2"]
    all_questions = json.load(open(os.path.join(data, "v2_OpenEnded_mscoco_val2014_questions.json")))
    dev = dict(all_questions, questions=all_questions["questions"][:4])  # a test-dev subset of the "test" set
    dev_file, full_file = tmp_path / "dev_questions.json", tmp_path / "full_questions.json"
    dev_file.write_text(json.dumps(dev))
    full_file.write_text(json.dumps(all_questions))
    summary = run(capsys, assets, "vqav2", tmp_path / "out", "--question_file", str(dev_file), "--image_folder",
                  os.path.join(data, "val2014"), "--upload_question_file", str(full_file), "--score")
    upload = json.load(open(summary["files"]["upload"]))
    assert [u["question_id"] for u in upload] == [q["question_id"] for q in all_questions["questions"]]
    assert all(u["answer"] == "" for u in upload[4:])  # unanswered ids are present, with ""
    assert summary["scores"]["upload"]["answered"] == 4 and summary["scores"]["upload"]["missing"] == 14


def test_pope(capsys, assets, tmp_path):
    data = assets["data"]["pope"]
    summary = run(capsys, assets, "pope", tmp_path, "--data", data, "--score")
    assert list(summary["files"]) == ["random", "popular", "adversarial"]
    for split, path in summary["files"].items():
        labels = [json.loads(line) for line in open(os.path.join(data, "coco", f"coco_pope_{split}.json"))]
        answers = [json.loads(line) for line in open(path)]
        assert [a["question_id"] for a in answers] == [label["question_id"] for label in labels]
        assert all(isinstance(a["text"], str) for a in answers)
    scores = summary["scores"]
    assert set(scores["splits"]) == {"random", "popular", "adversarial"} and "mean_f1" in scores
    for metrics in scores["splits"].values():
        assert {"accuracy", "precision", "recall", "f1", "yes_ratio"} <= set(metrics)
        assert metrics["questions"] == 4 and metrics["pairing"] == "position" and metrics["missing"] == 0


def test_coco_caption_scored_with_pycocoevalcap(capsys, assets, tmp_path):
    data = assets["data"]["coco_caption"]
    summary = run(capsys, assets, "coco_caption", tmp_path, "--data", data, "--score")
    results = json.load(open(summary["files"]["results"]))
    assert [r["image_id"] for r in results] == [1, 2, 3]
    assert all(set(r) == {"image_id", "caption"} for r in results)
    scores = summary["scores"]
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(scores)
    assert scores["counts"]["images"] == scores["counts"]["scored"] == 3


def test_flickr30k_results_read_by_the_scorer(capsys, assets, tmp_path):
    data = assets["data"]["flickr30k"]
    summary = run(capsys, assets, "flickr30k", tmp_path, "--data", data)
    annotations = os.path.join(data, "flickr30k_karpathy_test_gt.json")
    assert summary["score_command"] == (f"llava-ln score --benchmark flickr30k --annotations {annotations} "
                                        f"--predictions {summary['files']['results']}")
    predictions, counts = load_caption_predictions(summary["files"]["results"])
    assert set(predictions) == set(load_caption_annotations(annotations)) == {1, 2, 3}
    assert counts["duplicate_ids"] == counts["invalid_records"] == 0


def test_bad_layouts_are_one_line_errors_naming_the_file(capsys, assets, tmp_path):
    from llava_ln.evaluation.args import EvalArguments
    from llava_ln.evaluation.runner import run_eval

    pope = assets["data"]["pope"]
    base = dict(model_path=assets["run"], output_dir=str(tmp_path), device="cpu")
    with pytest.raises(LlavaLnError, match="--question_file is not used by --benchmark pope"):
        run_eval(EvalArguments(benchmark="pope", data=pope, question_file="x.json", **base))
    with pytest.raises(LlavaLnError, match=r"coco_pope_random\.json, record 0 \(question_id 1\): image file not found"):
        run_eval(EvalArguments(benchmark="pope", data=pope, image_folder=str(tmp_path), **base))
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}]')
    with pytest.raises(LlavaLnError, match="broken.json is not valid JSON"):
        run_eval(EvalArguments(benchmark="coco_caption", annotation_file=str(broken), image_folder=str(tmp_path), **base))
    assert not os.path.exists(tmp_path / "answers")  # nothing was started
