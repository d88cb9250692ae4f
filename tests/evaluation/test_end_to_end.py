"""End to end on a small toy world: `llava-ln eval` then scoring, for all five benchmarks.

The model is the toy backbones with an untuned connector; its scores are whatever it gets. The
assertions are about the files (official formats and order, every question covered, checked
against the toy world's own ground-truth files) and the scorer's JSON (keys and counts).
Caption scoring runs Java (PTB tokenizer, METEOR), so it runs once, for COCO; the Flickr30k
results are checked with the scorer's own readers.
"""
import json
import os

import pytest
from eval_helpers import eval_cli, single_thread, toy_assets

from llava_ln.scoring.caption import load_caption_annotations, load_caption_predictions

COMMON = ("--max_new_tokens", "8", "--batch_size", "16", "--device", "cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_assets(tmp_path_factory)


def run(capsys, toy, benchmark, folder, out, *extra):
    return eval_cli(capsys, "--benchmark", benchmark, "--model_path", toy["run"], "--data",
                    os.path.join(toy["eval"], folder), "--output_dir", str(out), *COMMON, *extra)


def jsonl(path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_mme_files_are_the_eval_tool_layout(capsys, toy, tmp_path):
    summary = run(capsys, toy, "mme", "MME", tmp_path, "--score")
    folder = summary["files"]["mme_results"]
    templates = os.path.join(toy["eval"], "MME", "eval_tool", "Your_Results")
    assert sorted(os.listdir(folder)) == sorted(os.listdir(templates))
    for name in os.listdir(templates):
        expected = open(os.path.join(templates, name), encoding="utf-8").read().splitlines()
        written = open(os.path.join(folder, name), encoding="utf-8").read().split("\n")
        assert written[-1] == "" and len(written) - 1 == len(expected)
        # The eval tool's own lines (image, question, ground truth), in its order, plus one response field.
        assert [line.rsplit("\t", 1)[0] for line in written[:-1]] == expected
        assert all(line.count("\t") == 3 for line in written[:-1])
    scores = summary["scores"]
    assert {"perception", "cognition", "subtasks", "details"} <= set(scores)
    assert set(scores["subtasks"]) == {name[:-4] for name in os.listdir(templates)}
    assert sum(d["questions"] for d in scores["details"].values()) == summary["questions"] == 16
    assert json.load(open(tmp_path / "scores.json")) == scores
    # Without --json: one headline line (the answers are reused), the whole result in eval_summary.json.
    from llava_ln.cli import main

    assert main(["eval", "--benchmark", "mme", "--model_path", toy["run"], "--data", os.path.join(toy["eval"], "MME"),
                 "--output_dir", str(tmp_path), *COMMON, "--score"]) == 0
    assert capsys.readouterr().out == (f"mme: MME perception {scores['perception']:.2f} (n=16 questions); full results: "
                                       f"{tmp_path / 'scores.json'} and {tmp_path / 'eval_summary.json'}\n")
    assert json.load(open(tmp_path / "eval_summary.json"))["reused_answers"] == 16


def test_vqav2_results_and_score(capsys, toy, tmp_path):
    summary = run(capsys, toy, "vqav2", "vqav2", tmp_path, "--score")
    questions = json.load(open(os.path.join(toy["eval"], "vqav2", "v2_OpenEnded_mscoco_val2014_questions.json")))
    results = json.load(open(summary["files"]["results"]))
    assert [r["question_id"] for r in results] == [q["question_id"] for q in questions["questions"]]
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in results)
    scores = summary["scores"]
    assert {"overall", "yes/no", "number", "other", "per_question_type"} <= set(scores)
    assert scores["counts"]["questions"] == scores["counts"]["answered"] == len(results) == 20
    assert scores["counts"]["missing"] == scores["counts"]["extra"] == 0


def test_pope_answers_per_split_in_label_order(capsys, toy, tmp_path):
    summary = run(capsys, toy, "pope", "pope", tmp_path, "--score")
    assert list(summary["files"]) == ["random", "popular", "adversarial"]
    for split, path in summary["files"].items():
        labels = jsonl(os.path.join(toy["eval"], "pope", "coco", f"coco_pope_{split}.json"))
        answers = jsonl(path)
        assert [a["question_id"] for a in answers] == [label["question_id"] for label in labels]
        assert all(isinstance(a["text"], str) and a["prompt"].startswith(label["text"])
                   for a, label in zip(answers, labels))
    scores = summary["scores"]
    assert set(scores["splits"]) == {"random", "popular", "adversarial"} and "mean_f1" in scores
    for metrics in scores["splits"].values():
        assert {"accuracy", "precision", "recall", "f1", "yes_ratio"} <= set(metrics)
        assert metrics["questions"] == 12 and metrics["pairing"] == "position" and metrics["id_mismatches"] == 0


def test_coco_caption_scored_with_pycocoevalcap(capsys, toy, tmp_path):
    summary = run(capsys, toy, "coco_caption", "coco_caption", tmp_path, "--score")
    gt = json.load(open(os.path.join(toy["eval"], "coco_caption", "coco_karpathy_test_gt.json")))
    results = json.load(open(summary["files"]["results"]))
    assert [r["image_id"] for r in results] == [image["id"] for image in gt["images"]]
    assert all(set(r) == {"image_id", "caption"} and r["caption"] for r in results)
    scores = summary["scores"]
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(scores)
    assert scores["counts"]["images"] == scores["counts"]["scored"] == len(results) == 5


def test_flickr30k_results_read_by_the_scorer(capsys, toy, tmp_path):
    summary = run(capsys, toy, "flickr30k", "flickr30k", tmp_path)
    annotations = os.path.join(toy["eval"], "flickr30k", "flickr30k_karpathy_test_gt.json")
    assert summary["score_command"] == (f"llava-ln score --benchmark flickr30k --annotations {annotations} "
                                        f"--predictions {summary['files']['results']}")
    predictions, counts = load_caption_predictions(summary["files"]["results"])
    assert set(predictions) == set(load_caption_annotations(annotations)) and len(predictions) == 5
    assert counts["duplicate_ids"] == counts["invalid_records"] == 0


def test_merged_and_plain_transformers_folders_answer_like_the_run_folder(capsys, toy, tmp_path):
    import shutil

    from llava_ln.cli import main

    from_run = run(capsys, toy, "vqav2", "vqav2", tmp_path / "run")
    assert main(["merge", "--checkpoint", toy["run"], "--output_dir", str(tmp_path / "merged")]) == 0
    merged = eval_cli(capsys, "--benchmark", "vqav2", "--model_path", str(tmp_path / "merged"), "--data",
                      os.path.join(toy["eval"], "vqav2"), "--output_dir", str(tmp_path / "merged_out"), *COMMON)
    # Without llava-ln's manifest the folder is a plain transformers LLaVA model: name its template.
    shutil.copytree(tmp_path / "merged", tmp_path / "plain")
    os.remove(tmp_path / "plain" / "manifest.json")
    plain = eval_cli(capsys, "--benchmark", "vqav2", "--model_path", str(tmp_path / "plain"), "--conv_template",
                     "vicuna_v1", "--data", os.path.join(toy["eval"], "vqav2"), "--output_dir",
                     str(tmp_path / "plain_out"), *COMMON)
    expected = json.load(open(from_run["files"]["results"]))
    assert json.load(open(merged["files"]["results"])) == expected
    assert json.load(open(plain["files"]["results"])) == expected
