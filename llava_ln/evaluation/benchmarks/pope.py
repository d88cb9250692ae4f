"""POPE: read the per-split label files as questions, write the answers of each split in label order.

Layout read with --data ROOT (LLaVA's playground/data/eval/pope):
  ROOT/coco/coco_pope_<split>.json (or ROOT/coco_pope_<split>.json): JSON lines
      {"question_id", "image", "text", "label"}, one file per split (random, popular, adversarial)
  ROOT/val2014/<image> (else ROOT/images/, else ROOT) holds the images
--annotation_file takes one label file, a folder of them, or `split=path,split=path`; --image_folder the images.
Question ids restart in every split, so an answer is keyed by split and id.

Written: OUTPUT_DIR/pope_answers/<split>.jsonl, lines {"question_id", "prompt", "text", "image"} in
label-file order (the official scorer pairs answers with labels by position).
"""
import glob
import os

from llava_ln.core.benchmarks import POPE_SPLITS
from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks.common import (
    DataFlags,
    EvalItem,
    data_root,
    first_existing,
    image_file,
    reject_unused,
    require_file,
    with_suffix,
)
from llava_ln.scoring.dispatch import ScoreRequest
from llava_ln.scoring.files import read_json_or_jsonl, write_pope_answers
from llava_ln.scoring.pope import split_paths

LABEL_PREFIX = "coco_pope_"
ANSWERS_FOLDER = "pope_answers"


def _split_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.removeprefix(LABEL_PREFIX) or stem


def _ordered(splits: dict) -> dict:
    """The three official splits first, in the paper's order, then any others by name."""
    names = [s for s in POPE_SPLITS if s in splits] + sorted(s for s in splits if s not in POPE_SPLITS)
    return {name: splits[name] for name in names}


def _label_files_in(folder: str) -> dict:
    return {_split_name(p): os.path.abspath(p) for p in sorted(glob.glob(os.path.join(folder, LABEL_PREFIX + "*.json*")))}


def locate(flags: DataFlags) -> dict:
    reject_unused(flags, "pope", used=("annotation_file",))
    root = None if (flags.annotation_file and flags.image_folder) else data_root(
        flags, "pope", "--annotation_file and --image_folder")
    if flags.annotation_file and os.path.isdir(flags.annotation_file):
        labels = _label_files_in(flags.annotation_file)
    elif flags.annotation_file:
        labels = {name: require_file(path, "--annotation_file")
                  for name, path in split_paths(flags.annotation_file, "--annotation_file").items()}
    else:
        labels = _label_files_in(os.path.join(root, "coco")) or _label_files_in(root)
    if not labels:
        raise LlavaLnError(f"--data {root}: no {LABEL_PREFIX}<split>.json label files in it or in its coco/ folder")
    if flags.image_folder:
        images = os.path.abspath(flags.image_folder)
    else:
        images = first_existing(root, ("val2014", "images"), kind="dir") or root
    return {"labels": _ordered(labels), "image_folder": images}


def read_items(sources: dict, prompt_suffix: str) -> list[EvalItem]:
    items = []
    for split, path in sources["labels"].items():
        payload = read_json_or_jsonl(path, "POPE labels")
        records = [payload] if isinstance(payload, dict) else payload
        seen = set()
        for index, record in enumerate(records):
            where = f"POPE label file {path}, record {index}"
            if not isinstance(record, dict) or any(k not in record for k in ("question_id", "image", "text")):
                raise LlavaLnError(f"{where}: needs 'question_id', 'image' and 'text'")
            if not isinstance(record["text"], str):
                raise LlavaLnError(f"{where} (question_id {record['question_id']}): 'text' is not a string")
            if str(record["question_id"]) in seen:
                raise LlavaLnError(f"{where}: question_id {record['question_id']} appears twice in split {split!r}")
            seen.add(str(record["question_id"]))
            image = image_file(sources["image_folder"], record["image"], f"{where} (question_id {record['question_id']})")
            items.append(EvalItem(key=f"{split}/{record['question_id']}", image=image,
                                  prompt=with_suffix(record["text"], prompt_suffix), group=split,
                                  record={"question_id": record["question_id"], "image": record["image"]}))
    return items


def write_outputs(sources: dict, items: list, answers: dict, output_dir: str) -> dict:
    folder = os.path.join(output_dir, ANSWERS_FOLDER)
    files, counts = {}, {}
    for split in sources["labels"]:
        rows = [{"question_id": item.record["question_id"], "prompt": item.prompt, "text": answers[item.key],
                 "image": item.record["image"]} for item in items if item.group == split]
        files[split] = os.path.join(folder, f"{split}.jsonl")
        counts[split] = write_pope_answers(files[split], rows)
    return {"files": files, "counts": counts,
            "score": ScoreRequest(benchmark="pope", annotations=_split_pairs(sources["labels"]),
                                  predictions=_split_pairs(files))}


def _split_pairs(paths: dict) -> str:
    """The scorer's `split=path,split=path` form."""
    return ",".join(f"{split}={path}" for split, path in paths.items())
