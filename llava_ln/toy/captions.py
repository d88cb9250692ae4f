"""Captions: stage-1 records in LLaVA's pretrain format and COCO-format reference files.

Stage-1 records look like LLaVA-558K's: one human turn holding a brief-caption
instruction and `<image>`, one gpt turn holding the caption (the "plain" template keeps only
image + caption). Reference files follow the COCO captions annotation format
(`images` + `annotations`) that pycocoevalcap's COCO loader reads.
"""
import numpy as np

from llava_ln.toy.instruct import llava_record
from llava_ln.toy.language import brief_caption, reference_captions
from llava_ln.toy.prompts import BRIEF_PROMPTS
from llava_ln.toy.world import IMAGE_SIZE, Scene

REFERENCES_PER_IMAGE = 5


def pretrain_records(scenes: list[Scene], image_names: list[str], rng: np.random.Generator) -> list[dict]:
    records = []
    for index, (scene, name) in enumerate(zip(scenes, image_names)):
        prompt = BRIEF_PROMPTS[int(rng.integers(len(BRIEF_PROMPTS)))]
        records.append(llava_record(f"toy_pretrain_{index:06d}", name, [(prompt, brief_caption(scene, rng))], rng))
    return records


def coco_caption_file(scenes: list[Scene], image_ids: list[int], file_names: list[str], rng: np.random.Generator,
                      description: str) -> dict:
    """A COCO captions annotation dict with REFERENCES_PER_IMAGE references per image."""
    images, annotations = [], []
    for scene, image_id, file_name in zip(scenes, image_ids, file_names):
        images.append({"id": image_id, "file_name": file_name, "height": IMAGE_SIZE, "width": IMAGE_SIZE})
        for caption in reference_captions(scene, rng, REFERENCES_PER_IMAGE):
            annotations.append({"image_id": image_id, "id": len(annotations) + 1, "caption": caption})
    return {
        "info": {"description": description, "version": "1.0", "year": 2024},
        "licenses": [],
        "type": "captions",
        "images": images,
        "annotations": annotations,
    }
