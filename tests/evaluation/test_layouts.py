"""Official layouts beyond the toy world's: MME's images/ + questions_answers_YN/ subtasks, caption
images named from ids, the VQAv2 test-dev upload, LLaVA question files, and one-line errors."""
import json
import os
import shutil

import pytest
from eval_helpers import eval_cli

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import MAX_PROMPT_CHARS
from llava_ln.evaluation.args import EvalArguments
from llava_ln.evaluation.benchmarks import mme, vqav2
from llava_ln.evaluation.benchmarks.common import SHORT_ANSWER_SUFFIX, DataFlags
from llava_ln.evaluation.runner import run_eval

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest.py)

COMMON = ("--max_new_tokens", "4", "--batch_size", "8", "--device", "cpu")


def test_mme_reads_both_release_folder_styles_in_pair_order(assets):
    items = mme.read_items(mme.locate(DataFlags(data=assets["data"]["mme"])), SHORT_ANSWER_SUFFIX)
    assert [i.group for i in items] == ["artwork"] * 4 + ["existence"] * 4
    assert [os.path.basename(i.image) for i in items[:4]] == ["1000.jpg", "1000.jpg", "1001.jpg", "1001.jpg"]
    assert all("/images/" in i.image for i in items[:4]) and [i.record["ground_truth"] for i in items[:2]] == ["Yes", "No"]
    assert items[0].prompt == items[0].record["question"] + "\n" + SHORT_ANSWER_SUFFIX


def test_llava_question_file_and_official_file_give_the_same_prompts(assets, tmp_path):
    data = assets["data"]["vqav2"]
    official = vqav2.read_items(vqav2.locate(DataFlags(data=data)), SHORT_ANSWER_SUFFIX)
    llava_file = tmp_path / "llava_vqav2_mscoco_val2014.jsonl"
    with open(llava_file, "w") as handle:  # LLaVA's files already carry the suffix: it must not be added twice
        for item in official:
            handle.write(json.dumps({"question_id": item.record["question_id"], "image": os.path.basename(item.image),
                                     "text": item.prompt, "category": "default"}) + "\n")
    flags = DataFlags(question_file=str(llava_file), image_folder=os.path.join(data, "val2014"))
    llava = vqav2.read_items(vqav2.locate(flags), SHORT_ANSWER_SUFFIX)
    assert [(i.key, i.image, i.prompt) for i in llava] == [(i.key, i.image, i.prompt) for i in official]


def test_vqav2_test_dev_upload_covers_every_test_question(capsys, assets, tmp_path):
    data = assets["data"]["vqav2"]
    all_questions = json.load(open(os.path.join(data, "v2_OpenEnded_mscoco_val2014_questions.json")))
    dev = dict(all_questions, questions=all_questions["questions"][:4])  # test-dev: a subset of the test set
    dev_file, full_file = tmp_path / "dev_questions.json", tmp_path / "full_questions.json"
    dev_file.write_text(json.dumps(dev))
    full_file.write_text(json.dumps(all_questions))
    summary = eval_cli(capsys, "--benchmark", "vqav2", "--model_path", assets["run"], "--output_dir",
                       str(tmp_path / "out"), "--question_file", str(dev_file), "--image_folder",
                       os.path.join(data, "val2014"), "--upload_question_file", str(full_file), "--score", *COMMON)
    upload = json.load(open(summary["files"]["upload"]))
    assert [u["question_id"] for u in upload] == [q["question_id"] for q in all_questions["questions"]]
    assert all(u["answer"] == "" for u in upload[4:])  # ids outside test-dev are present, with ""
    assert summary["scores"]["upload"]["answered"] == 4 and summary["scores"]["upload"]["missing"] == 14


def test_caption_images_without_file_name_use_the_official_names(capsys, assets, tmp_path):
    summary = eval_cli(capsys, "--benchmark", "flickr30k", "--model_path", assets["run"], "--output_dir",
                       str(tmp_path), "--data", assets["data"]["flickr30k"], *COMMON)
    prompts = [json.loads(line)["prompt"] for line in open(tmp_path / "answers" / "part-00000.jsonl")]
    assert set(prompts) == {"Provide a one-sentence caption for the provided image."}
    assert [r["image_id"] for r in json.load(open(summary["files"]["results"]))] == [1, 2, 3]


def test_bad_input_is_a_one_line_error_naming_the_file(assets, tmp_path):
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


def test_corrupt_image_names_the_question_and_keeps_earlier_batches(assets, tmp_path):
    data = tmp_path / "pope"
    os.makedirs(data / "coco")
    images = os.path.join(assets["data"]["pope"], "val2014")
    labels = [json.loads(line) for line in open(os.path.join(assets["data"]["pope"], "coco", "coco_pope_random.json"))]
    (data / "coco" / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in labels))
    os.makedirs(data / "val2014")
    for record in labels:
        source = os.path.join(images, record["image"])
        (data / "val2014" / record["image"]).write_bytes(open(source, "rb").read())
    last = labels[-1]["image"]
    (data / "val2014" / last).write_bytes(b"not a jpeg")
    args = EvalArguments(benchmark="pope", data=str(data), model_path=assets["run"], output_dir=str(tmp_path / "out"),
                         device="cpu", batch_size=1, max_new_tokens=2)
    with pytest.raises(LlavaLnError, match=rf"question random/4: cannot read image .*{last}"):
        run_eval(args)
    saved = [json.loads(line)["key"] for line in open(tmp_path / "out" / "answers" / "part-00000.jsonl")]
    assert len(saved) == 3 and "random/4" not in saved  # answers before the bad image are kept for the rerun


def test_a_run_folder_whose_backbones_were_moved_is_one_line_naming_the_missing_folder(assets, tmp_path):
    """A run folder records its base LLM and tower by path: copied to another machine, they may be gone."""
    run = shutil.copytree(assets["run"], tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    gone = str(tmp_path / "moved" / "llm")
    manifest.update(llm=gone, tokenizer=gone)
    (run / "manifest.json").write_text(json.dumps(manifest))
    args = EvalArguments(benchmark="pope", data=assets["data"]["pope"], model_path=str(run),
                         output_dir=str(tmp_path / "out"), device="cpu")
    with pytest.raises(LlavaLnError, match=rf"{gone}: no such folder \(moved or deleted\?\)") as raised:
        run_eval(args)
    assert "Repo id" not in str(raised.value)


def test_a_benchmark_without_questions_is_an_error_naming_its_files(assets, tmp_path):
    """Not a run that answers nothing and reports success (or scores 0 items)."""
    empty = tmp_path / "questions.jsonl"
    empty.write_text("\n")
    args = EvalArguments(benchmark="generic", model_path=assets["run"], question_file=str(empty),
                         image_folder=str(tmp_path), output_dir=str(tmp_path / "out"), device="cpu")
    with pytest.raises(LlavaLnError, match=rf"--benchmark generic: no questions in {empty}"):
        run_eval(args)
    assert not os.path.exists(tmp_path / "out" / "answers")


def test_a_training_folder_without_a_final_save_names_its_newest_checkpoint(assets, tmp_path):
    for step in (2, 10):  # numeric order, not name order
        shutil.copytree(assets["run"], tmp_path / "run" / f"checkpoint-{step}")
    args = EvalArguments(benchmark="pope", data=assets["data"]["pope"], model_path=str(tmp_path / "run"),
                         output_dir=str(tmp_path / "out"), device="cpu")
    with pytest.raises(LlavaLnError, match=rf"it holds 2 checkpoint\(s\), the newest is {tmp_path}/run/checkpoint-10$"):
        run_eval(args)


@pytest.mark.parametrize("text,problem", [("What is <image> here?", "the question text itself contains <image>"),
                                          ("x" * (MAX_PROMPT_CHARS + 1), "the question text has .* characters, more than")])
def test_a_question_that_cannot_be_asked_stops_eval_before_any_model_loads(tmp_path, text, problem):
    """The model path names nothing: only a check made before loading can name the question."""
    (tmp_path / "a.png").write_bytes(b"")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": "fine", "image": "a.png", "text": "What is it?"}) + "\n" +
                         json.dumps({"question_id": "q7", "image": "a.png", "text": text}) + "\n")
    args = EvalArguments(benchmark="generic", model_path=str(tmp_path / "no_model"), question_file=str(questions),
                         image_folder=str(tmp_path), output_dir=str(tmp_path / "out"), device="cpu")
    with pytest.raises(LlavaLnError, match=f"question q7: {problem}"):
        run_eval(args)
