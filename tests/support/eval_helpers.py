"""Evaluation test helpers: a run folder from the tiny backbones and mini benchmarks in the official layouts."""
import json
import os
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from llava_ln.checkpoint.manifest import Manifest
from llava_ln.checkpoint.run_folder import save_run, trainable_tensors
from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode

YES_NO = ("Yes", "No")


def make_run_folder(directory: str, llm: str, vision: str, seed: int = 0, tune_mode: str = "full",
                    scale: float = 0.5) -> str:
    """A trained-kind run folder whose trained tensors are random but fixed (seeded).

    The default ("full", scale 0.5) makes a tiny random LLM's answers vary with image and question;
    tune_mode="connector" with a small scale is an untuned model on real (toy) backbones.
    """
    tokenizer = load_tokenizer(llm)
    model, spec = build_mllm(ModelArguments(model_name_or_path=llm, vision_tower=vision), tokenizer)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0} if tune_mode == "lora" else None
    model, plan = apply_tune_mode(model, TuningArguments(tune_mode=tune_mode, lora_r=4, lora_alpha=8,
                                                         lora_dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    manifest = Manifest(kind="trained", llm=llm, tokenizer=llm, vision_tower=vision, mm_projector_type="mlp2x_gelu",
                        mm_vision_select_layer=-2, mm_vision_select_feature="patch", tune_mode=tune_mode,
                        conv_template="vicuna_v1", image_aspect_ratio="pad", image_token_id=spec.image_token_id,
                        num_image_tokens=spec.num_image_tokens, lora=lora, tune_embeddings=plan.tune_embeddings)
    save_run(directory, model, manifest, tensors=trainable_tensors(model, plan))
    return directory


def _image(path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(20, 48)), int(rng.integers(20, 48))  # not square: exercises padding
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def _json(path: str, payload) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    return path


def write_mme(root: str, images_per_subtask: int = 2) -> str:
    """MME release layout: `existence` with images beside the .txt files, `artwork` with images/ + questions_answers_YN/."""
    release = os.path.join(root, "MME_Benchmark_release_version")
    for number, subtask in enumerate(("existence", "artwork")):
        split = subtask == "artwork"
        for index in range(images_per_subtask):
            stem = f"{number}{index:03d}"
            image_dir = os.path.join(release, subtask, "images") if split else os.path.join(release, subtask)
            qa_dir = os.path.join(release, subtask, "questions_answers_YN") if split else image_dir
            _image(os.path.join(image_dir, stem + (".jpg" if split else ".png")), seed=100 + 10 * number + index)
            os.makedirs(qa_dir, exist_ok=True)
            with open(os.path.join(qa_dir, stem + ".txt"), "w", encoding="utf-8") as handle:
                handle.write(f"Is there a red circle in picture {index}? Please answer yes or no.\tYes\n")
                handle.write(f"Is there a blue square in picture {index}? Please answer yes or no.\tNo\n")
    return root


def write_vqav2(root: str, images: int = 9, questions_per_image: int = 2) -> str:
    """Official VQAv2 val files: questions, annotations (10 answers each), val2014/COCO_val2014_<id>.jpg."""
    questions, annotations = [], []
    words = ("red", "two", "yes", "circle", "left", "no")
    for image_id in range(1, images + 1):
        _image(os.path.join(root, "val2014", f"COCO_val2014_{image_id:012d}.jpg"), seed=200 + image_id)
        for q in range(questions_per_image):
            qid = image_id * 1000 + q
            questions.append({"image_id": image_id, "question_id": qid,
                              # Different lengths, so batches need padding.
                              "question": f"What is shown number {q}?" + " Look closely." * ((image_id + q) % 3)})
            answer = words[(image_id + q) % len(words)]
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": "what is",
                                "answer_type": "yes/no" if answer in ("yes", "no") else "other",
                                "multiple_choice_answer": answer,
                                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1}
                                            for k in range(10)]})
    _json(os.path.join(root, "v2_OpenEnded_mscoco_val2014_questions.json"),
          {"data_subtype": "val2014", "task_type": "Open-Ended", "questions": questions})
    _json(os.path.join(root, "v2_mscoco_val2014_annotations.json"), {"data_subtype": "val2014", "annotations": annotations})
    return root


def write_pope(root: str, questions_per_split: int = 4) -> str:
    """LLaVA's POPE layout: coco/coco_pope_<split>.json label lines and val2014/ images."""
    for number, split in enumerate(("random", "popular", "adversarial")):
        lines = []
        for qid in range(1, questions_per_split + 1):
            image = f"COCO_val2014_{qid:012d}.jpg"
            if number == 0:
                _image(os.path.join(root, "val2014", image), seed=300 + qid)
            lines.append({"question_id": qid, "image": image, "text": f"Is there a thing {qid + number} in the image?",
                          "label": "yes" if qid % 2 else "no"})
        os.makedirs(os.path.join(root, "coco"), exist_ok=True)
        with open(os.path.join(root, "coco", f"coco_pope_{split}.json"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
    return root


def write_captions(root: str, benchmark: str, images: int = 3) -> str:
    """Karpathy-test-style COCO-format ground truth with 5 references per image (no file names: official naming)."""
    refs = ("a red circle on a dark background", "two shapes in a picture", "a small blue square",
            "some colored shapes", "an image with a triangle")
    image_entries, annotations = [], []
    for image_id in range(1, images + 1):
        name = f"COCO_val2014_{image_id:012d}.jpg" if benchmark == "coco_caption" else f"{image_id}.jpg"
        folder = "val2014" if benchmark == "coco_caption" else "flickr30k-images"
        _image(os.path.join(root, folder, name), seed=400 + image_id)
        image_entries.append({"id": image_id})
        for k in range(5):
            annotations.append({"image_id": image_id, "id": len(annotations) + 1, "caption": refs[(image_id + k) % 5]})
    gt = "coco_karpathy_test_gt.json" if benchmark == "coco_caption" else "flickr30k_karpathy_test_gt.json"
    _json(os.path.join(root, gt), {"images": image_entries, "annotations": annotations})
    return root


def write_all_benchmarks(root: str) -> dict:
    return {
        "mme": write_mme(os.path.join(root, "MME")),
        "vqav2": write_vqav2(os.path.join(root, "vqav2")),
        "pope": write_pope(os.path.join(root, "pope")),
        "coco_caption": write_captions(os.path.join(root, "coco"), "coco_caption"),
        "flickr30k": write_captions(os.path.join(root, "flickr30k"), "flickr30k"),
    }


_SESSION_CACHE = {}


def session_assets(tmp_path_factory, tiny_llm, tiny_vision) -> dict:
    """One run folder and one set of mini benchmarks per test session, shared by every eval test module."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _SESSION_CACHE:
        root = str(tmp_path_factory.mktemp("eval_assets"))
        run = make_run_folder(os.path.join(root, "run"), tiny_llm("llama"), tiny_vision("clip"))
        _SESSION_CACHE[key] = {"run": run, "data": write_all_benchmarks(os.path.join(root, "benchmarks")),
                               "root": root}
    return _SESSION_CACHE[key]


def eval_cli(capsys, *argv) -> dict:
    """Run `llava-ln eval --json` in this process; returns its printed JSON (fails the test on a non-zero exit)."""
    from llava_ln.cli import main

    capsys.readouterr()
    code = main(["eval", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return json.loads(captured.out)


@contextmanager
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CI box the threads' spinning costs seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toy_assets(tmp_path_factory) -> dict:
    """A small toy world (scale 0.05) and an untuned run folder on its backbones (connector only), once per session."""
    key = ("toy", str(tmp_path_factory.getbasetemp()))
    if key not in _SESSION_CACHE:
        from llava_ln.cli import main

        root = str(tmp_path_factory.mktemp("toy_eval"))
        world = os.path.join(root, "world")
        assert main(["toy", "--out", world, "--seed", "0", "--scale", "0.05"]) == 0
        run = make_run_folder(os.path.join(root, "run"), os.path.join(world, "llm"), os.path.join(world, "vision"),
                              tune_mode="connector", scale=0.02)
        _SESSION_CACHE[key] = {"world": world, "eval": os.path.join(world, "eval"), "run": run}
    return _SESSION_CACHE[key]
