"""COCO and Flickr30k captioning: read a COCO-format caption file, write the COCO results JSON.

Layout read with --data ROOT (Karpathy test split in COCO format, as captioning papers use it):
  annotations: ROOT/<one of the names below>, else the only *.json in ROOT (or ROOT/annotations/)
      coco_caption: coco_karpathy_test_gt.json, captions_test5k.json, annotations/captions_val2014.json
      flickr30k:    flickr30k_karpathy_test_gt.json, flickr30k_test_gt.json, captions_test.json
    {"images": [{"id", "file_name"?}], "annotations": [{"image_id", "caption"}]}: every listed image
    (or, without "images", every annotated image id) is captioned once, in file order
  images: ROOT/val2014/ or ROOT/flickr30k-images/, else ROOT/images/, else ROOT; an image without a
    file_name is COCO_val2014_<id:012d>.jpg (COCO) or <id>.jpg (Flickr30k), the official names
--annotation_file and --image_folder override each part.

Written: OUTPUT_DIR/<benchmark>_results.json, [{"image_id", "caption"}], one caption per image.
"""
import glob
import os
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks.common import (
    DataFlags,
    EvalItem,
    data_root,
    first_existing,
    image_file,
    reject_unused,
    require_file,
)
from llava_ln.scoring.dispatch import ScoreRequest
from llava_ln.scoring.files import read_json, write_caption_results


@dataclass(frozen=True)
class CaptionLayout:
    name: str
    annotation_names: tuple
    image_folders: tuple
    image_name_format: str  # for images listed without a file_name


COCO = CaptionLayout("coco_caption", ("coco_karpathy_test_gt.json", "captions_test5k.json",
                                      "annotations/captions_val2014.json"),
                     ("val2014", "images"), "COCO_val2014_{image_id:012d}.jpg")
FLICKR30K = CaptionLayout("flickr30k", ("flickr30k_karpathy_test_gt.json", "flickr30k_test_gt.json", "captions_test.json"),
                          ("flickr30k-images", "images"), "{image_id}.jpg")


def _only_json(root: str) -> str | None:
    for folder in (root, os.path.join(root, "annotations")):
        found = sorted(glob.glob(os.path.join(folder, "*.json")))
        if len(found) == 1:
            return os.path.abspath(found[0])
    return None


def locate(layout: CaptionLayout, flags: DataFlags) -> dict:
    reject_unused(flags, layout.name, used=("annotation_file",))
    root = None if (flags.annotation_file and flags.image_folder) else data_root(
        flags, layout.name, "--annotation_file and --image_folder")
    if flags.annotation_file:
        annotations = require_file(flags.annotation_file, "--annotation_file")
    else:
        annotations = first_existing(root, layout.annotation_names) or _only_json(root)
        if annotations is None:
            raise LlavaLnError(f"--data {root}: no caption annotation file ({', '.join(layout.annotation_names)}, "
                               "or a single *.json); pass --annotation_file")
    if flags.image_folder:
        images = os.path.abspath(flags.image_folder)
    else:
        images = first_existing(root, layout.image_folders, kind="dir") or root
    return {"annotations": annotations, "image_folder": images}


def _listed_images(payload, path: str) -> list:
    """[(image_id, file_name or None)] in file order, each id once."""
    if not isinstance(payload, dict) or not isinstance(payload.get("annotations"), list):
        raise LlavaLnError(f"caption annotation file {path} must be COCO format: an object with an 'annotations' list")
    listed = payload.get("images")
    if isinstance(listed, list) and listed:
        entries = []
        for index, image in enumerate(listed):
            if not isinstance(image, dict) or "id" not in image:
                raise LlavaLnError(f"caption annotation file {path}, images[{index}] has no 'id'")
            entries.append((image["id"], image.get("file_name")))
    else:
        entries = [(a.get("image_id"), None) for a in payload["annotations"] if isinstance(a, dict)]
    unique, seen = [], set()
    for image_id, file_name in entries:
        if image_id is None or isinstance(image_id, (bool, float, list, dict)):
            raise LlavaLnError(f"caption annotation file {path}: unusable image id {image_id!r}")
        if image_id not in seen:
            seen.add(image_id)
            unique.append((image_id, file_name))
    return unique


def read_items(layout: CaptionLayout, sources: dict, prompt: str) -> list[EvalItem]:
    path = sources["annotations"]
    items = []
    for image_id, file_name in _listed_images(read_json(path, "caption annotations"), path):
        if not file_name:
            if not isinstance(image_id, int) and "{image_id:012d}" in layout.image_name_format:
                raise LlavaLnError(f"caption annotation file {path}: image {image_id!r} has no file_name")
            file_name = layout.image_name_format.format(image_id=image_id)
        image = image_file(sources["image_folder"], file_name, f"caption annotation file {path}, image {image_id!r}")
        items.append(EvalItem(key=str(image_id), image=image, prompt=prompt, record={"image_id": image_id}))
    return items


def write_outputs(layout: CaptionLayout, sources: dict, items: list, answers: dict, output_dir: str) -> dict:
    results = os.path.join(output_dir, f"{layout.name}_results.json")
    rows = [{"image_id": item.record["image_id"], "caption": answers[item.key]} for item in items]
    return {"files": {"results": results}, "counts": {"results": write_caption_results(results, rows)},
            "score": ScoreRequest(benchmark=layout.name, annotations=sources["annotations"], predictions=results)}
