"""MME: read the official release folder, write the per-subtask files the official eval tool reads.

Layout read (the `MME_Benchmark_release_version` folder, given as --data or found inside it):
  <subtask>/images/<name>.jpg + <subtask>/questions_answers_YN/<name>.txt   (artwork, celebrity, ...)
  <subtask>/<name>.png + <subtask>/<name>.txt                                 (existence, count, ...)
Each .txt holds the image's two questions, one per line: `question<TAB>Yes|No`.
Every subfolder with such files is a subtask, so a partial copy (or the toy world's) works too.

Written: OUTPUT_DIR/mme_results/<subtask>.txt with lines `image<TAB>question<TAB>ground truth<TAB>response`
(LLaVA's convert_answer_to_mme layout: the question without the added suffix, the image's file
name), the two questions of an image on consecutive lines, as the official tool pairs them.
"""
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks.common import (
    DataFlags,
    EvalItem,
    data_root,
    image_with_stem,
    reject_unused,
    with_suffix,
)
from llava_ln.scoring.dispatch import ScoreRequest
from llava_ln.scoring.files import write_mme_subtask_files

RELEASE_FOLDER = "MME_Benchmark_release_version"
SPLIT_LAYOUT = ("images", "questions_answers_YN")
RESULTS_FOLDER = "mme_results"


def locate(flags: DataFlags) -> dict:
    reject_unused(flags, "mme", used=())
    root = data_root(flags, "mme", "nothing else (MME is one folder)")
    if os.path.isdir(os.path.join(root, RELEASE_FOLDER)):
        root = os.path.join(root, RELEASE_FOLDER)
    image_folder = os.path.abspath(flags.image_folder) if flags.image_folder else None
    return {"root": root, "image_folder": image_folder}


def _subtask_folders(root: str, image_folder: str | None):
    """(subtask, question folder, image folder) for every subfolder holding question files, sorted by name."""
    found = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        split_qa = os.path.join(folder, SPLIT_LAYOUT[1])
        if os.path.isdir(split_qa):
            qa_folder, images = split_qa, os.path.join(folder, SPLIT_LAYOUT[0])
        else:
            qa_folder, images = folder, folder
        if image_folder:  # --image_folder replaces the release's own image folders: <image_folder>/<subtask>/
            images = os.path.join(image_folder, name)
        if any(f.endswith(".txt") for f in os.listdir(qa_folder)):
            found.append((name, qa_folder, images))
    if not found:
        raise LlavaLnError(f"--data {root}: no MME subtask folders (subfolders holding <image>.txt question files)")
    return found


def _questions(path: str):
    """(line number, question, ground truth) of one image's question file."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise LlavaLnError(f"MME question file {path} line {number}: expected 'question<TAB>Yes|No'")
            yield number, parts[0].strip(), parts[1].strip()


def read_items(sources: dict, prompt_suffix: str) -> list[EvalItem]:
    items = []
    for subtask, qa_folder, image_folder in _subtask_folders(sources["root"], sources["image_folder"]):
        for file_name in sorted(f for f in os.listdir(qa_folder) if f.endswith(".txt")):
            stem = file_name[: -len(".txt")]
            path = os.path.join(qa_folder, file_name)
            image = image_with_stem(image_folder, stem, f"MME question file {path}")
            for number, question, truth in _questions(path):
                items.append(EvalItem(
                    key=f"{subtask}/{file_name}:{number}", image=image, prompt=with_suffix(question, prompt_suffix),
                    group=subtask,
                    record={"subtask": subtask, "image": os.path.basename(image), "question": question,
                            "ground_truth": truth},
                ))
    return items


def write_outputs(sources: dict, items: list, answers: dict, output_dir: str) -> dict:
    folder = os.path.join(output_dir, RESULTS_FOLDER)
    rows = [{**item.record, "response": answers[item.key]} for item in items]
    counts = write_mme_subtask_files(folder, rows)
    return {"files": {"mme_results": folder}, "counts": counts,
            "score": ScoreRequest(benchmark="mme", predictions=folder)}
