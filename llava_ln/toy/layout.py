"""The toy world on disk: where every file goes (relative paths) and the byte-stable writers.

The evaluation folders copy the layouts LLaVA users know from `playground/data/eval/`
(MME's release folder and eval_tool, POPE's coco/ label folder, VQAv2's and the Karpathy
caption splits' official file names), so any evaluator that reads the real benchmarks from
their usual places reads these too. Everything lives under a toy world's eval/ folder, and
every file's "info"/description says it is the toy world. The writer, the README and the
tests all take paths from here.

Same content must give the same bytes on every run: JSON keys keep insertion order, the
separators and indentation are fixed, files end with one newline, and images are encoded
with fixed settings (world.png_bytes, world.jpeg_bytes). Each file is written to a temporary
name in its folder and then renamed, so an interrupted run never leaves a half-written file
under the final name.
"""
import json
import os
import tempfile

from llava_ln.core.atomic import honour_umask
from llava_ln.core.benchmarks import BENCHMARKS, POPE_SPLITS

IMAGES = "images"
PRETRAIN_IMAGES = "pretrain"  # relative to IMAGES, as LLaVA records' "image" fields are
INSTRUCT_IMAGES = "instruct"

PRETRAIN_JSON = "data/pretrain.json"
INSTRUCT_JSON = {kind: f"data/instruct_{kind}.json" for kind in ("conversation", "detail", "reasoning")}

EVAL = "eval"
# Official file names, so that evaluators that find files by name (and derive image names
# from ids, e.g. COCO_val2014_<id:012d>.jpg) work on the toy sets unchanged.
_VQA, _POPE, _MME, _COCO, _FLICKR = (BENCHMARKS[name].folder for name in
                                     ("vqav2", "pope", "mme", "coco_caption", "flickr30k"))
VQA_IMAGES = f"{_VQA}/val2014"
VQA_QUESTIONS = f"{_VQA}/v2_OpenEnded_mscoco_val2014_questions.json"
VQA_ANNOTATIONS = f"{_VQA}/v2_mscoco_val2014_annotations.json"
VQA_LLAVA = f"{_VQA}/llava_vqav2_mscoco_val2014.jsonl"

POPE_IMAGES = f"{_POPE}/val2014"
POPE_LABELS = {split: f"{_POPE}/coco/coco_pope_{split}.json" for split in POPE_SPLITS}
POPE_LLAVA = f"{_POPE}/llava_pope_test.jsonl"

MME_RELEASE = f"{_MME}/MME_Benchmark_release_version"
MME_GROUND_TRUTH = f"{_MME}/eval_tool/Your_Results"
MME_LLAVA = f"{_MME}/llava_mme.jsonl"

COCO_IMAGES = f"{_COCO}/val2014"
COCO_ANNOTATIONS = f"{_COCO}/coco_karpathy_test_gt.json"
COCO_LLAVA = f"{_COCO}/llava_coco_caption_test.jsonl"

FLICKR_IMAGES = f"{_FLICKR}/flickr30k-images"
FLICKR_ANNOTATIONS = f"{_FLICKR}/flickr30k_karpathy_test_gt.json"
FLICKR_LLAVA = f"{_FLICKR}/llava_flickr30k_test.jsonl"


def coco_image_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


def flickr_image_name(image_id: int) -> str:
    return f"{image_id}.jpg"


EVAL_README = "README.md"
EVAL_INDEX = "benchmarks.json"
WORLD_MANIFEST = "toy_world.json"


def eval_index() -> dict:
    """benchmarks.json: for each benchmark, the files an evaluator needs (relative to DIR/eval)."""
    return {
        "vqav2": {"question_file": VQA_LLAVA, "image_folder": VQA_IMAGES, "questions": VQA_QUESTIONS,
                  "annotations": VQA_ANNOTATIONS},
        "pope": {"question_file": POPE_LLAVA, "image_folder": POPE_IMAGES, "annotations": dict(POPE_LABELS)},
        "mme": {"question_file": MME_LLAVA, "image_folder": MME_RELEASE, "ground_truth": MME_GROUND_TRUTH},
        "coco_caption": {"question_file": COCO_LLAVA, "image_folder": COCO_IMAGES, "annotations": COCO_ANNOTATIONS},
        "flickr30k": {"question_file": FLICKR_LLAVA, "image_folder": FLICKR_IMAGES,
                      "annotations": FLICKR_ANNOTATIONS},
    }


# ------------------------------------------------------------------------------ writers
def write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    honour_umask(temp)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, indent: int | None = 1) -> None:
    separators = (",", ": ") if indent else (", ", ": ")
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators) + "\n")


def write_jsonl(path: str, rows) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
