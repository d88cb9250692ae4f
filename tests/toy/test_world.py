"""The toy world's files: determinism, and each eval set in its official benchmark format.

A small world (--scale 0.05) is generated once per session; the format checks read the
files as the official tools (and our evaluator) would.
"""
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from llava_ln.core.benchmarks import POPE_SPLITS as SPLITS
from llava_ln.toy import layout
from llava_ln.toy.eval_sets import MME_SUBTASKS as SUBTASKS
from llava_ln.toy.generate import write_toy_world
from llava_ln.toy.world import CATEGORIES

SCALE = 0.05


def _digest_tree(root: str) -> dict:
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                digests[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("toy") / "world")
    write_toy_world(out, seed=3, scale=SCALE)
    return out


def _eval(world: str, relative: str) -> str:
    return os.path.join(world, layout.EVAL, relative)


def _jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_same_seed_gives_byte_identical_files_through_the_cli(toy_world, tmp_path):
    again = str(tmp_path / "again")
    result = subprocess.run([sys.executable, "-m", "llava_ln.cli", "toy", "--out", again, "--seed", "3",
                             "--scale", str(SCALE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    first, second = _digest_tree(toy_world), _digest_tree(again)
    assert len(first) > 100
    assert first == second
    assert json.loads(result.stdout.strip().splitlines()[-1])["out"] == again


def test_other_seed_gives_other_data(toy_world, tmp_path):
    other = str(tmp_path / "other")
    write_toy_world(other, seed=4, scale=SCALE, backbones=False)
    first, second = _digest_tree(toy_world), _digest_tree(other)
    shared = set(first) & set(second)
    assert layout.PRETRAIN_JSON in shared
    assert first[layout.PRETRAIN_JSON] != second[layout.PRETRAIN_JSON]
    changed = [p for p in shared if p.endswith(".png") and first[p] != second[p]]
    assert len(changed) > 0.9 * len([p for p in shared if p.endswith(".png")])


def test_regenerating_into_an_old_world_replaces_it_and_foreign_folders_are_refused(tmp_path):
    out = str(tmp_path / "w")
    write_toy_world(out, seed=0, scale=0.1, backbones=False)
    write_toy_world(out, seed=0, scale=0.02, backbones=False)
    pretrain_images = os.listdir(os.path.join(out, layout.IMAGES, layout.PRETRAIN_IMAGES))
    assert len(pretrain_images) == len(_json(os.path.join(out, layout.PRETRAIN_JSON)))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "llava_ln.cli", "toy", "--out", str(foreign)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "not empty" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine"


def test_training_files_are_valid_llava_records_with_existing_images(toy_world):
    from llava_ln.data.records import parse_record

    for relative in [layout.PRETRAIN_JSON, *layout.INSTRUCT_JSON.values()]:
        records = _json(os.path.join(toy_world, relative))
        assert records, relative
        for record in records:
            conversation = parse_record(record)
            assert os.path.isfile(os.path.join(toy_world, layout.IMAGES, record["image"]))
            assert len(conversation.messages) >= 2
    conversations = _json(os.path.join(toy_world, layout.INSTRUCT_JSON["conversation"]))
    assert max(len(r["conversations"]) for r in conversations) >= 4  # multi-turn


def test_vqa_files_follow_the_official_format(toy_world):
    questions = _json(_eval(toy_world, layout.VQA_QUESTIONS))
    annotations = _json(_eval(toy_world, layout.VQA_ANNOTATIONS))
    assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == "val2014"
    by_id = {a["question_id"]: a for a in annotations["annotations"]}
    assert [q["question_id"] for q in questions["questions"]] == list(by_id)
    types = Counter()
    for question in questions["questions"]:
        annotation = by_id[question["question_id"]]
        assert annotation["image_id"] == question["image_id"]
        assert [a["answer_id"] for a in annotation["answers"]] == list(range(1, 11))
        assert all(a["answer_confidence"] in ("yes", "maybe", "no") for a in annotation["answers"])
        assert annotation["multiple_choice_answer"] in [a["answer"] for a in annotation["answers"]]
        types[annotation["answer_type"]] += 1
        image = layout.coco_image_name(question["image_id"])
        assert os.path.isfile(_eval(toy_world, os.path.join(layout.VQA_IMAGES, image)))
    assert set(types) == {"yes/no", "number", "other"}
    rows = _jsonl(_eval(toy_world, layout.VQA_LLAVA))
    assert [r["question_id"] for r in rows] == list(by_id)
    assert all(r["text"].endswith("\nAnswer the question using a single word or phrase.") for r in rows)


def test_vqa_ground_truth_scores_perfectly_with_the_official_rules(toy_world, tmp_path):
    from llava_ln.scoring.vqa import score_vqa_files

    annotations_path = _eval(toy_world, layout.VQA_ANNOTATIONS)
    annotations = _json(annotations_path)["annotations"]
    for name, answer_of in (("perfect", lambda a: a["multiple_choice_answer"]), ("wrong", lambda a: "banana")):
        predictions = tmp_path / f"{name}.json"
        predictions.write_text(json.dumps([{"question_id": a["question_id"], "answer": answer_of(a)}
                                           for a in annotations]))
        scores = score_vqa_files(annotations_path, str(predictions), _eval(toy_world, layout.VQA_QUESTIONS))
        assert scores["overall"] == (100.0 if name == "perfect" else 0.0)


def test_mme_files_pair_one_yes_and_one_no_per_image(toy_world):
    rows = _jsonl(_eval(toy_world, layout.MME_LLAVA))
    for subtask in SUBTASKS:
        lines = open(_eval(toy_world, os.path.join(layout.MME_GROUND_TRUTH, f"{subtask}.txt")),
                     encoding="utf-8").read().splitlines()
        assert len(lines) % 2 == 0 and lines
        for first, second in zip(lines[0::2], lines[1::2]):
            image_a, question_a, answer_a = first.split("\t")
            image_b, question_b, answer_b = second.split("\t")
            assert image_a == image_b and (answer_a, answer_b) == ("Yes", "No") and question_a != question_b
            assert question_a.endswith("Please answer yes or no.")
            release = _eval(toy_world, os.path.join(layout.MME_RELEASE, subtask))
            assert os.path.isfile(os.path.join(release, image_a))
            with open(os.path.join(release, image_a[:-4] + ".txt"), encoding="utf-8") as handle:
                assert handle.read().splitlines() == [f"{question_a}\tYes", f"{question_b}\tNo"]
        subtask_rows = [r for r in rows if r["category"] == subtask]
        assert [r["text"].split("\n")[0] for r in subtask_rows] == [line.split("\t")[1] for line in lines]
        assert all(r["question_id"] == r["image"] and r["image"].startswith(subtask + "/") for r in subtask_rows)


def test_pope_splits_are_balanced_and_share_images_and_positives(toy_world):
    splits = {split: _jsonl(_eval(toy_world, layout.POPE_LABELS[split])) for split in SPLITS}
    positives = None
    for split, rows in splits.items():
        assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        per_image = {}
        for row in rows:
            per_image.setdefault(row["image"], []).append(row)
        for image, image_rows in per_image.items():
            assert [r["label"] for r in image_rows] == ["yes", "no"] * 3
            yes = {r["text"] for r in image_rows if r["label"] == "yes"}
            no = {r["text"] for r in image_rows if r["label"] == "no"}
            assert len(yes) == 3 and len(no) == 3 and not yes & no
        split_positives = [(r["image"], r["text"]) for r in rows if r["label"] == "yes"]
        positives = positives or split_positives
        assert split_positives == positives
        mentioned = {r["text"].removeprefix("Is there a ").removesuffix(" in the image?") for r in rows}
        assert mentioned <= set(CATEGORIES)
    assert [r["text"] for r in splits["random"]] != [r["text"] for r in splits["adversarial"]]
    llava = _jsonl(_eval(toy_world, layout.POPE_LLAVA))
    assert len({r["question_id"] for r in llava}) == len(llava) == sum(len(r) for r in splits.values())
    assert [r["category"] for r in llava] == [s for s in SPLITS for _ in splits[s]]


@pytest.mark.parametrize("benchmark", ["coco_caption", "flickr30k"])
def test_caption_files_are_coco_format_with_five_references(toy_world, benchmark):
    index = _json(_eval(toy_world, layout.EVAL_INDEX))[benchmark]
    payload = _json(_eval(toy_world, index["annotations"]))
    image_ids = [image["id"] for image in payload["images"]]
    assert len(set(image_ids)) == len(image_ids)
    references = Counter(a["image_id"] for a in payload["annotations"])
    assert set(references) == set(image_ids) and set(references.values()) == {5}
    assert len({a["id"] for a in payload["annotations"]}) == len(payload["annotations"])
    for image in payload["images"]:
        assert os.path.isfile(_eval(toy_world, os.path.join(index["image_folder"], image["file_name"])))


@pytest.mark.parametrize("benchmark", ["mme", "vqav2", "pope", "coco_caption", "flickr30k"])
def test_our_evaluator_finds_every_set_from_its_folder(toy_world, benchmark):
    from llava_ln.evaluation.benchmarks.common import DataFlags
    from llava_ln.evaluation.benchmarks.registry import get_benchmark

    folders = {"mme": "MME", "vqav2": "vqav2", "pope": "pope", "coco_caption": "coco_caption",
               "flickr30k": "flickr30k"}
    spec = get_benchmark(benchmark)
    sources = spec.locate(DataFlags(data=_eval(toy_world, folders[benchmark])))
    items = spec.read_items(sources, spec.default_prompt)
    expected = {
        "mme": len(_jsonl(_eval(toy_world, layout.MME_LLAVA))),
        "vqav2": len(_jsonl(_eval(toy_world, layout.VQA_LLAVA))),
        "pope": len(_jsonl(_eval(toy_world, layout.POPE_LLAVA))),
        "coco_caption": len(_jsonl(_eval(toy_world, layout.COCO_LLAVA))),
        "flickr30k": len(_jsonl(_eval(toy_world, layout.FLICKR_LLAVA))),
    }[benchmark]
    assert len(items) == expected
    assert all(os.path.isfile(item.image) for item in items)


def test_eval_readme_and_index_describe_the_files_present(toy_world):
    index = _json(_eval(toy_world, layout.EVAL_INDEX))
    for entry in index.values():
        for value in entry.values():
            for path in (value.values() if isinstance(value, dict) else [value]):
                assert os.path.exists(_eval(toy_world, path)), path
    readme = open(_eval(toy_world, layout.EVAL_README), encoding="utf-8").read()
    for path in (layout.VQA_QUESTIONS, layout.POPE_LLAVA, layout.MME_LLAVA, layout.COCO_ANNOTATIONS,
                 layout.FLICKR_ANNOTATIONS):
        assert path in readme
