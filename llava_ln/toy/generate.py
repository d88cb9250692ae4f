"""Write a whole toy world (images, training data, evaluation sets, backbones) from one seed.

Each part draws from its own named random stream derived from the seed, so the parts do
not depend on each other's draws: changing the size of one set leaves the others' files
unchanged, and the same seed always gives byte-identical files.
"""
import os
import shutil
from dataclasses import asdict, dataclass, fields

import numpy as np

from llava_ln.core.errors import LlavaLnError
from llava_ln.toy import layout
from llava_ln.toy.backbones import install_backbones
from llava_ln.toy.captions import coco_caption_file, pretrain_records
from llava_ln.toy.eval_mme import SUBTASKS, llava_mme_row, mme_items
from llava_ln.toy.eval_pope import OBJECTS_PER_IMAGE, pope_files
from llava_ln.toy.eval_vqa import vqa_files
from llava_ln.toy.files import write_bytes, write_json, write_jsonl, write_text
from llava_ln.toy.instruct import instruct_records
from llava_ln.toy.prompts import CAPTION_EVAL_PROMPT
from llava_ln.toy.readme import eval_readme
from llava_ln.toy.scenes import jpeg_bytes, png_bytes, render_scene, sample_scene
from llava_ln.toy.world import GRID, IMAGE_SIZE, PATCH_SIZE

# Stream ids are part of the file format: renumbering them changes every generated world.
STREAMS = {"pretrain": 1, "instruct": 2, "conversation": 3, "detail": 4, "reasoning": 5, "vqav2": 6, "pope": 7,
           "mme": 8, "coco_caption": 9, "flickr30k": 10}


@dataclass(frozen=True)
class ToySizes:
    pretrain_images: int = 1500
    instruct_images: int = 1500
    detail_records: int = 600
    vqa_images: int = 200
    vqa_questions_per_image: int = 2
    pope_images: int = 50
    mme_pairs_per_subtask: int = 30
    coco_images: int = 100
    flickr_images: int = 100

    def scaled(self, scale: float) -> "ToySizes":
        """Every count times `scale` (at least 2 of each), questions per image unchanged."""
        if scale <= 0:
            raise LlavaLnError(f"--scale must be positive, got {scale}")
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value if f.name == "vqa_questions_per_image" else max(2, round(value * scale))
        return ToySizes(**values)


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[name]])


def _write_images(folder: str, names: list[str], scenes) -> None:
    """PNG for training images; JPEG (as the real benchmarks ship) for names ending in .jpg."""
    for name, scene in zip(names, scenes):
        encode = jpeg_bytes if name.endswith(".jpg") else png_bytes
        write_bytes(os.path.join(folder, name), encode(render_scene(scene)))


def _scenes(rng: np.random.Generator, count: int, **kwargs) -> list:
    return [sample_scene(rng, **kwargs) for _ in range(count)]


def write_training_data(out: str, seed: int, sizes: ToySizes) -> dict:
    images = layout.in_dir(out, layout.IMAGES)
    rng = stream(seed, "pretrain")
    scenes = _scenes(rng, sizes.pretrain_images)
    names = [f"{layout.PRETRAIN_IMAGES}/toy_pretrain_{i:06d}.png" for i in range(len(scenes))]
    _write_images(images, names, scenes)
    write_json(layout.in_dir(out, layout.PRETRAIN_JSON), pretrain_records(scenes, names, rng))

    rng = stream(seed, "instruct")
    scenes = _scenes(rng, sizes.instruct_images)
    names = [f"{layout.INSTRUCT_IMAGES}/toy_instruct_{i:06d}.png" for i in range(len(scenes))]
    _write_images(images, names, scenes)
    counts = {"pretrain": sizes.pretrain_images}
    for kind, path in layout.INSTRUCT_JSON.items():
        limit = sizes.detail_records if kind == "detail" else len(scenes)
        records = instruct_records(kind, scenes[:limit], names[:limit], stream(seed, kind))
        write_json(layout.in_dir(out, path), records)
        counts[f"instruct_{kind}"] = len(records)
    return counts


def _eval_path(out: str, relative: str) -> str:
    return layout.in_dir(out, layout.EVAL, relative)


def write_vqa(out: str, seed: int, sizes: ToySizes) -> int:
    rng = stream(seed, "vqav2")
    scenes = _scenes(rng, sizes.vqa_images)
    ids = list(range(1, len(scenes) + 1))
    names = [layout.coco_image_name(i) for i in ids]
    _write_images(_eval_path(out, layout.VQA_IMAGES), names, scenes)
    questions, annotations, rows = vqa_files(scenes, ids, names, sizes.vqa_questions_per_image, rng)
    write_json(_eval_path(out, layout.VQA_QUESTIONS), questions, indent=None)  # one line, as the official files
    write_json(_eval_path(out, layout.VQA_ANNOTATIONS), annotations, indent=None)
    write_jsonl(_eval_path(out, layout.VQA_LLAVA), rows)
    return len(rows)


def write_pope(out: str, seed: int, sizes: ToySizes) -> int:
    rng = stream(seed, "pope")
    scenes = _scenes(rng, sizes.pope_images, min_objects=OBJECTS_PER_IMAGE, min_categories=OBJECTS_PER_IMAGE)
    names = [layout.coco_image_name(i) for i in range(1, len(scenes) + 1)]
    _write_images(_eval_path(out, layout.POPE_IMAGES), names, scenes)
    labels, rows = pope_files(scenes, names, rng)
    for split, split_rows in labels.items():
        write_jsonl(_eval_path(out, layout.POPE_LABELS[split]), split_rows)
    write_jsonl(_eval_path(out, layout.POPE_LLAVA), rows)
    return len(rows)


def write_mme(out: str, seed: int, sizes: ToySizes) -> int:
    rng = stream(seed, "mme")
    release = _eval_path(out, layout.MME_RELEASE)
    rows = []
    for subtask in SUBTASKS:
        ground_truth = []
        for name, scene, pairs in mme_items(subtask, sizes.mme_pairs_per_subtask, rng):
            write_bytes(os.path.join(release, subtask, name), jpeg_bytes(render_scene(scene)))
            stem = os.path.splitext(name)[0]
            write_text(os.path.join(release, subtask, stem + ".txt"), "".join(f"{q}\t{a}\n" for q, a in pairs))
            for question, answer in pairs:
                ground_truth.append(f"{name}\t{question}\t{answer}\n")
                rows.append(llava_mme_row(subtask, name, question))
        write_text(os.path.join(_eval_path(out, layout.MME_GROUND_TRUTH), f"{subtask}.txt"), "".join(ground_truth))
    write_jsonl(_eval_path(out, layout.MME_LLAVA), rows)
    return len(rows)


def write_captions(out: str, seed: int, name: str, count: int) -> int:
    rng = stream(seed, name)
    scenes = _scenes(rng, count)
    ids = list(range(1, count + 1))
    if name == "coco_caption":
        folder, annotations, questions = layout.COCO_IMAGES, layout.COCO_ANNOTATIONS, layout.COCO_LLAVA
        files = [layout.coco_image_name(i) for i in ids]
    else:
        folder, annotations, questions = layout.FLICKR_IMAGES, layout.FLICKR_ANNOTATIONS, layout.FLICKR_LLAVA
        ids = [1000000000 + i for i in ids]  # Flickr30k ids are large photo numbers
        files = [layout.flickr_image_name(i) for i in ids]
    _write_images(_eval_path(out, folder), files, scenes)
    write_json(_eval_path(out, annotations), coco_caption_file(scenes, ids, files, rng, f"llava-ln toy {name}"),
               indent=None)
    write_jsonl(_eval_path(out, questions), [
        {"question_id": i, "image": f, "text": CAPTION_EVAL_PROMPT, "category": name} for i, f in zip(ids, files)
    ])
    return count


def _prepare_out_dir(out: str) -> None:
    """Refuse to write into a folder that holds something other than an earlier toy world."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, layout.WORLD_MANIFEST)):
            raise LlavaLnError(f"--out {out!r} is not empty and holds no toy world; choose an empty or new folder")
        for part in (layout.IMAGES, "data", layout.EVAL):  # stale files of a larger earlier world
            shutil.rmtree(os.path.join(out, part), ignore_errors=True)
    os.makedirs(out, exist_ok=True)


def write_toy_world(out: str, seed: int = 0, scale: float = 1.0, backbones: bool = True) -> dict:
    """Generate everything under `out`; returns the manifest written to out/toy_world.json."""
    sizes = ToySizes().scaled(scale)
    _prepare_out_dir(out)
    counts = write_training_data(out, seed, sizes)
    counts["vqav2_questions"] = write_vqa(out, seed, sizes)
    counts["pope_questions"] = write_pope(out, seed, sizes)
    counts["mme_questions"] = write_mme(out, seed, sizes)
    counts["coco_caption_images"] = write_captions(out, seed, "coco_caption", sizes.coco_images)
    counts["flickr30k_images"] = write_captions(out, seed, "flickr30k", sizes.flickr_images)
    write_json(_eval_path(out, layout.EVAL_INDEX), layout.eval_index(), indent=2)
    write_text(_eval_path(out, layout.EVAL_README), eval_readme(sizes, counts))
    if backbones:
        install_backbones(out)
    manifest = {
        "seed": seed,
        "scale": scale,
        "sizes": asdict(sizes),
        "counts": counts,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "image_tokens": GRID * GRID,
        "llm": "llm" if backbones else None,
        "vision_tower": "vision" if backbones else None,
        "image_folder": layout.IMAGES,
        "data": {"pretrain": layout.PRETRAIN_JSON, **{f"instruct_{k}": v for k, v in layout.INSTRUCT_JSON.items()}},
        "eval_index": f"{layout.EVAL}/{layout.EVAL_INDEX}",
    }
    write_json(os.path.join(out, layout.WORLD_MANIFEST), manifest, indent=2)
    return manifest
