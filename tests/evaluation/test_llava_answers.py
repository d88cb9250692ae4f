"""LLaVA interop for evaluation: any LLaVA question file in, LLaVA's answer file out, read by LLaVA's converters.

The toy world ships LLaVA's question files next to the official layouts (llava_pope_test.jsonl,
llava_mme.jsonl, llava_vqav2_*.jsonl), with the same prompts; greedy answers in float32 do not
depend on batching, so a question answered through the generic benchmark and through the
official layout gets the same answer, and the two scorings must agree.
"""
import json
import os

import pytest
from eval_helpers import eval_cli, toy_assets

from llava_ln.cli import main
from llava_ln.evaluation.llava_answers import answer_id, model_id
from llava_ln.scoring.pope import score_pope_files

COMMON = ("--max_new_tokens", "4", "--batch_size", "16", "--device", "cpu", "--dtype", "float32")
LLAVA_KEYS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
SUFFIX = "Answer the question using a single word or phrase."
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/evaluation/conftest.py


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_assets(tmp_path_factory)


def jsonl(path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _eval(capsys, toy, out, *argv) -> dict:
    return eval_cli(capsys, "--model_path", toy["run"], "--output_dir", str(out), *COMMON, *argv)


@pytest.fixture(scope="module")
def pope_runs(toy, tmp_path_factory):
    """POPE answered twice: LLaVA's question file (generic) and the official layout with --answers_format llava."""
    root = tmp_path_factory.mktemp("pope_llava")
    pope = os.path.join(toy["eval"], "pope")
    generic = [*COMMON, "--benchmark", "generic", "--model_path", toy["run"], "--question_file",
               os.path.join(pope, "llava_pope_test.jsonl"), "--image_folder", os.path.join(pope, "val2014"),
               "--output_dir", str(root / "generic")]
    official = [*COMMON, "--benchmark", "pope", "--model_path", toy["run"], "--data", pope, "--answers_format",
                "llava", "--output_dir", str(root / "official")]
    assert main(["eval", *generic]) == 0
    assert main(["eval", *official]) == 0
    return {"generic": str(root / "generic"), "official": str(root / "official"), "pope": pope}


def test_generic_answer_file_is_model_vqa_loaders(pope_runs, toy):
    questions = jsonl(os.path.join(pope_runs["pope"], "llava_pope_test.jsonl"))
    rows = jsonl(os.path.join(pope_runs["generic"], "llava_answers.jsonl"))
    assert [set(r) for r in rows] == [LLAVA_KEYS] * len(questions)
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]  # question-file order
    assert [r["prompt"] for r in rows] == [q["text"].strip() for q in questions]  # asked as written
    assert {r["model_id"] for r in rows} == {model_id(toy["run"])} == {"run"}
    assert all(r["metadata"] == {} and isinstance(r["text"], str) for r in rows)
    assert [r["answer_id"] for r in rows] == [answer_id("run", r["question_id"], r["text"]) for r in rows]


def test_generic_pope_answers_score_as_llava_scores_them(pope_runs):
    coco = os.path.join(pope_runs["pope"], "coco")
    through_llava = score_pope_files(coco, os.path.join(pope_runs["generic"], "llava_answers.jsonl"),
                                     questions=os.path.join(pope_runs["pope"], "llava_pope_test.jsonl"))
    official = pope_runs["official"]
    per_split = ",".join(f"{s}={official}/pope_answers/{s}.jsonl" for s in ("random", "popular", "adversarial"))
    through_official = score_pope_files(coco, per_split)
    assert {s: m["f1"] for s, m in through_llava["splits"].items()} == \
        {s: m["f1"] for s, m in through_official["splits"].items()}
    assert through_llava["mean_f1"] == through_official["mean_f1"]
    assert all(m["split_from"] == "questions" and m["id_mismatches"] == 0 for m in through_llava["splits"].values())


def test_pope_llava_answers_use_llavas_question_ids_and_score(pope_runs):
    generic = jsonl(os.path.join(pope_runs["generic"], "llava_answers.jsonl"))
    ours = jsonl(os.path.join(pope_runs["official"], "llava_answers.jsonl"))
    # The toy POPE folder holds llava_pope_test.jsonl, so the ids are LLaVA's own: the same file as the generic run's.
    assert [(r["question_id"], r["prompt"], r["text"]) for r in ours] == \
        [(r["question_id"], r["prompt"], r["text"]) for r in generic]
    companion = os.path.join(pope_runs["official"], "llava_pope_questions.jsonl")
    scored = score_pope_files(os.path.join(pope_runs["pope"], "coco"),
                              os.path.join(pope_runs["official"], "llava_answers.jsonl"), questions=companion)
    assert scored["missing"] == 0 and scored["unassigned_answers"] == 0
    # eval_pope.py's own pairing: answers of a category (by the question file) zipped with that label file.
    categories = {q["question_id"]: q["category"] for q in jsonl(companion)}
    for split in ("random", "popular", "adversarial"):
        labels = jsonl(os.path.join(pope_runs["pope"], "coco", f"coco_pope_{split}.json"))
        answers = [r for r in ours if categories[r["question_id"]] == split]
        assert [r["prompt"].split("\n")[0] for r in answers] == [label["text"] for label in labels]


def test_mme_llava_answers_resolve_in_convert_answer_to_mme(capsys, toy, tmp_path):
    summary = _eval(capsys, toy, tmp_path, "--benchmark", "mme", "--data", os.path.join(toy["eval"], "MME"),
                    "--answers_format", "llava")
    rows = jsonl(summary["files"]["llava_answers"])
    release = os.path.join(toy["eval"], "MME", "MME_Benchmark_release_version")
    truth = _llava_mme_ground_truth(release)
    official = {}
    for name in os.listdir(summary["files"]["mme_results"]):
        with open(os.path.join(summary["files"]["mme_results"], name), encoding="utf-8") as handle:
            official[name[:-4]] = [line.rstrip("\n").split("\t") for line in handle]
    converted = {}
    for row in rows:  # what LLaVA's convert_answer_to_mme.py does with each answer line
        category = row["question_id"].split("/")[0]
        file = row["question_id"].split("/")[-1].split(".")[0] + ".txt"
        prompt = row["prompt"].replace(SUFFIX, "").strip()
        converted.setdefault(category, []).append([prompt, truth[category, file, prompt], row["text"]])
    assert {c: [line[1:] for line in lines] for c, lines in official.items()} == converted
    # The ids and prompts are those of LLaVA's llava_mme.jsonl (the toy world writes one).
    questions = jsonl(os.path.join(toy["eval"], "MME", "llava_mme.jsonl"))
    assert sorted((q["question_id"], q["text"]) for q in questions) == sorted((r["question_id"], r["prompt"]) for r in rows)


def _llava_mme_ground_truth(release: str) -> dict:
    """LLaVA's get_gt: (category, question file, question) -> answer, over the release folder."""
    truth = {}
    for category in os.listdir(release):
        folder = os.path.join(release, category)
        qa = os.path.join(folder, "questions_answers_YN") if os.path.isdir(os.path.join(folder, "images")) else folder
        for file in os.listdir(qa):
            if file.endswith(".txt"):
                for line in open(os.path.join(qa, file), encoding="utf-8"):
                    question, answer = line.strip().split("\t")
                    truth[category, file, question] = answer
    return truth


def test_vqav2_llava_answers_match_the_results_file(capsys, toy, tmp_path):
    summary = _eval(capsys, toy, tmp_path, "--benchmark", "vqav2", "--data", os.path.join(toy["eval"], "vqav2"),
                    "--answers_format", "llava")
    rows = jsonl(summary["files"]["llava_answers"])
    results = json.load(open(summary["files"]["results"], encoding="utf-8"))
    assert [(r["question_id"], r["text"]) for r in rows] == [(r["question_id"], r["answer"]) for r in results]
    assert all(set(r) == LLAVA_KEYS for r in rows)


def test_generic_needs_a_question_file_and_has_nothing_to_score(capsys, toy, tmp_path):
    assert main(["eval", "--benchmark", "generic", "--model_path", toy["run"], "--output_dir", str(tmp_path),
                 "--image_folder", str(tmp_path)]) == 2
    assert "--question_file" in capsys.readouterr().err
    pope = os.path.join(toy["eval"], "pope")
    code = main(["eval", *COMMON, "--benchmark", "generic", "--model_path", toy["run"], "--question_file",
                 os.path.join(pope, "llava_pope_test.jsonl"), "--image_folder", os.path.join(pope, "val2014"),
                 "--output_dir", str(tmp_path / "out"), "--score"])
    assert code == 2 and "no ground truth to score" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "answers")  # refused before any question was answered
