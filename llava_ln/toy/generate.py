"""Write a whole toy world (images, training data, evaluation sets, their README, backbones) from one seed.

Each part draws from its own named random stream derived from the seed, so the parts do
not depend on each other's draws: changing the size of one set leaves the others' files
unchanged, and the same seed always gives byte-identical files. The README written into
DIR/eval is generated from the same constants the writers use (layout.py, the sizes of this
world), so the description can never drift from the files next to it.
"""
import os
import shutil
from dataclasses import asdict, dataclass, fields

import numpy as np

from llava_ln.core.benchmarks import POPE_SPLITS
from llava_ln.core.errors import LlavaLnError
from llava_ln.toy import layout
from llava_ln.toy.backbones.spec import install_backbones
from llava_ln.toy.eval_sets import (
    MME_SUBTASKS,
    POPE_OBJECTS_PER_IMAGE,
    coco_caption_file,
    llava_mme_row,
    mme_items,
    pope_files,
    vqa_files,
)
from llava_ln.toy.language import CAPTION_EVAL_PROMPT, SHORT_ANSWER_SUFFIX, YES_NO_SUFFIX
from llava_ln.toy.layout import write_bytes, write_json, write_jsonl, write_text
from llava_ln.toy.train_data import instruct_records, pretrain_records
from llava_ln.toy.world import GRID, IMAGE_SIZE, PATCH_SIZE, jpeg_bytes, png_bytes, render_scene, sample_scene

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
    images = os.path.join(out, layout.IMAGES)
    rng = stream(seed, "pretrain")
    scenes = _scenes(rng, sizes.pretrain_images)
    names = [f"{layout.PRETRAIN_IMAGES}/toy_pretrain_{i:06d}.png" for i in range(len(scenes))]
    _write_images(images, names, scenes)
    write_json(os.path.join(out, layout.PRETRAIN_JSON), pretrain_records(scenes, names, rng))

    rng = stream(seed, "instruct")
    scenes = _scenes(rng, sizes.instruct_images)
    names = [f"{layout.INSTRUCT_IMAGES}/toy_instruct_{i:06d}.png" for i in range(len(scenes))]
    _write_images(images, names, scenes)
    counts = {"pretrain": sizes.pretrain_images}
    for kind, path in layout.INSTRUCT_JSON.items():
        limit = sizes.detail_records if kind == "detail" else len(scenes)
        records = instruct_records(kind, scenes[:limit], names[:limit], stream(seed, kind))
        write_json(os.path.join(out, path), records)
        counts[f"instruct_{kind}"] = len(records)
    return counts


def _eval_path(out: str, relative: str) -> str:
    return os.path.join(out, layout.EVAL, relative)


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
    scenes = _scenes(rng, sizes.pope_images, min_objects=POPE_OBJECTS_PER_IMAGE, min_categories=POPE_OBJECTS_PER_IMAGE)
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
    for subtask in MME_SUBTASKS:
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


def write_eval_sets(out: str, seed: int, sizes: ToySizes) -> dict:
    """The five benchmarks under out/eval (their images, files, index and README); returns their counts.

    Alone, for a smaller evaluation than the world's own: each set draws from its own stream, so a set
    written at another size is the same kind of sample, only longer or shorter."""
    counts = {"vqav2_questions": write_vqa(out, seed, sizes), "pope_questions": write_pope(out, seed, sizes),
              "mme_questions": write_mme(out, seed, sizes),
              "coco_caption_images": write_captions(out, seed, "coco_caption", sizes.coco_images),
              "flickr30k_images": write_captions(out, seed, "flickr30k", sizes.flickr_images)}
    write_json(_eval_path(out, layout.EVAL_INDEX), layout.eval_index(), indent=2)
    write_text(_eval_path(out, layout.EVAL_README), eval_readme(sizes, counts))
    return counts


def eval_readme(sizes: ToySizes, counts: dict) -> str:
    """DIR/eval/README.md: layout, file formats and prompts of each toy benchmark."""
    pope_labels = "\n".join(f"    {path}" for path in layout.POPE_LABELS.values())
    mme_dirs = ", ".join(MME_SUBTASKS)
    return f"""# Toy-world evaluation sets

Generated by `llava-ln toy`. Every set uses the official file format of the benchmark it
imitates, laid out as in LLaVA's `playground/data/eval/`, so the usual evaluation and
scoring code runs unchanged; the file names are the official ones. Images are
{IMAGE_SIZE}x{IMAGE_SIZE} JPEGs (quality 95, as the real benchmarks ship JPEGs) of coloured shapes. `benchmarks.json` lists, per
benchmark, the question file, image folder and ground-truth files (paths relative to
this folder).

Question files (`llava_*.jsonl`) follow LLaVA's `model_vqa_loader` input: one JSON object
per line, `{{"question_id", "image", "text", "category"}}`, where `image` is relative to the
benchmark's image folder and `text` is the full prompt, already ending in LLaVA-1.5's
instruction "{SHORT_ANSWER_SUFFIX}" (captions: "{CAPTION_EVAL_PROMPT}").

## VQAv2 ({counts['vqav2_questions']} questions on {sizes.vqa_images} images)
    {layout.VQA_QUESTIONS}     official questions JSON ("questions": image_id, question, question_id)
    {layout.VQA_ANNOTATIONS}   official annotations JSON (10 answers per question, answer_type, question_type)
    {layout.VQA_LLAVA}
    {layout.VQA_IMAGES}/COCO_val2014_<image_id:012d>.jpg
question_id = image_id * 1000 + k. Answer types: yes/no, number, other. A few annotators
give variants (number words, synonyms, mistakes), so the official normalisation matters.
Score a results file `[{{"question_id", "answer"}}]` with the official VQA rules.

## POPE ({counts['pope_questions']} questions: {sizes.pope_images} images x 6 x {len(POPE_SPLITS)} splits)
{pope_labels}
    {layout.POPE_LLAVA}   (category = split; question_id unique over the file)
    {layout.POPE_IMAGES}/COCO_val2014_<n:012d>.jpg
Label files are JSON lines `{{"question_id", "image", "text", "label"}}`, question_id 1..N per
split, 3 "yes" (objects in the image) and 3 "no" per image, yes/no alternating. Negatives:
random = any absent object; popular = the most frequent objects of this set; adversarial =
the objects that co-occur most with the image's objects. An "object" is a colour + shape,
e.g. "red circle". Answers pair with labels by position within a split.

## MME ({counts['mme_questions']} questions: {sizes.mme_pairs_per_subtask} images x 2 per subtask)
    {layout.MME_RELEASE}/<subtask>/<image>.jpg and <image>.txt
    {layout.MME_GROUND_TRUTH}/<subtask>.txt
    {layout.MME_LLAVA}   (question_id = image = "<subtask>/<image>.jpg")
Subtasks: {mme_dirs} (perception). Each `<image>.txt` holds two lines `question<TAB>answer`,
first Yes then No; questions end with "{YES_NO_SUFFIX}". `eval_tool/Your_Results/<subtask>.txt`
is the eval tool's layout without responses: `image<TAB>question<TAB>ground_truth` in
official order (the two questions of an image on consecutive lines); append
`<TAB>response` to each line to score.

## COCO captions ({counts['coco_caption_images']} images) and Flickr30k ({counts['flickr30k_images']} images)
    {layout.COCO_ANNOTATIONS}   COCO captions format: "images" (id, file_name) + "annotations" (image_id, id, caption)
    {layout.COCO_LLAVA}
    {layout.COCO_IMAGES}/COCO_val2014_<image_id:012d>.jpg
    {layout.FLICKR_ANNOTATIONS}   same COCO format
    {layout.FLICKR_LLAVA}
    {layout.FLICKR_IMAGES}/<image_id>.jpg
5 reference captions per image. Score `[{{"image_id", "caption"}}]` with pycocoevalcap
(Java needed for the PTB tokenizer and METEOR).
"""


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
    counts.update(write_eval_sets(out, seed, sizes))
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
