"""VQAv2: read official (or LLaVA) question files, write the results JSON and the EvalAI test-dev upload.

Layout read with --data ROOT and --split S (default val2014), as the VQAv2 download unpacks:
  ROOT/v2_OpenEnded_mscoco_<S>_questions.json   {"data_subtype", "questions": [{"image_id", "question", "question_id"}]}
  ROOT/v2_mscoco_<S>_annotations.json           (val/train only: enables local scoring)
  ROOT/<images>/COCO_<images>_<image_id:012d>.jpg  where <images> is S, or test2015 for test-dev2015
  ROOT/v2_OpenEnded_mscoco_test2015_questions.json  (test splits: the id list the upload covers)
LLaVA's JSON-lines question files ({"question_id", "image", "text"}, e.g.
llava_vqav2_mscoco_test-dev2015.jsonl) work through --question_file; their "image" names the file.
--question_file, --annotation_file, --image_folder and --upload_question_file override each part.

Written: OUTPUT_DIR/vqav2_results.json ([{"question_id", "answer"}], raw answers, question order);
without annotations (a test split), or with --upload_question_file, also
OUTPUT_DIR/vqav2_testdev_upload.json: every id of the upload question file, EvalAI-processed, "" when unanswered.
"""
import os

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
from llava_ln.scoring.files import read_json_or_jsonl, require_list, write_vqa_results
from llava_ln.scoring.vqa import write_vqav2_testdev_upload

DEFAULT_SPLIT = "val2014"
RESULTS_FILE = "vqav2_results.json"
UPLOAD_FILE = "vqav2_testdev_upload.json"


def image_subtype(split: str) -> str:
    """The image folder of a question split: test-dev questions are about test2015 images."""
    return "test2015" if split.startswith("test") else split


def locate(flags: DataFlags) -> dict:
    reject_unused(flags, "vqav2", used=("question_file", "annotation_file", "split", "upload_question_file"))
    split = flags.split or DEFAULT_SPLIT
    root = None if (flags.question_file and flags.image_folder) else data_root(
        flags, "vqav2", "--question_file and --image_folder")
    if flags.question_file:
        questions = require_file(flags.question_file, "--question_file")
    else:
        questions = first_existing(root, (f"v2_OpenEnded_mscoco_{split}_questions.json",
                                          f"llava_vqav2_mscoco_{split}.jsonl"))
        if questions is None:
            raise LlavaLnError(f"--data {root}: no v2_OpenEnded_mscoco_{split}_questions.json "
                               "(pass --split or --question_file)")
    if flags.annotation_file:
        annotations = require_file(flags.annotation_file, "--annotation_file")
    else:
        annotations = first_existing(root, (f"v2_mscoco_{split}_annotations.json",)) if root else None
    if flags.image_folder:
        images = os.path.abspath(flags.image_folder)
    else:
        images = first_existing(root, (image_subtype(split),), kind="dir") or root
    upload = None
    if flags.upload_question_file:
        upload = require_file(flags.upload_question_file, "--upload_question_file")
    elif annotations is None:
        upload = (first_existing(root, ("v2_OpenEnded_mscoco_test2015_questions.json",
                                        "llava_vqav2_mscoco_test2015.jsonl")) if root else None) or questions
    return {"questions": questions, "annotations": annotations, "image_folder": images, "split": split,
            "upload_questions": upload}


def _image_name(record: dict, subtype: str, where: str) -> str:
    if isinstance(record.get("image"), str):
        return record["image"]
    image_id = record.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise LlavaLnError(f"{where}: needs an integer 'image_id' (or an 'image' file name)")
    return f"COCO_{subtype}_{image_id:012d}.jpg"


def read_items(sources: dict, prompt_suffix: str) -> list[EvalItem]:
    path = sources["questions"]
    payload = read_json_or_jsonl(path, "VQAv2 questions")
    subtype = image_subtype(payload.get("data_subtype", sources["split"]) if isinstance(payload, dict)
                            else sources["split"])
    items, seen = [], set()
    for index, record in enumerate(require_list(payload, path, "VQAv2 questions", key="questions")):
        where = f"VQAv2 questions file {path}, record {index}"
        if not isinstance(record, dict) or "question_id" not in record:
            raise LlavaLnError(f"{where}: needs a 'question_id'")
        question = record.get("question", record.get("text"))
        if not isinstance(question, str) or not question.strip():
            raise LlavaLnError(f"{where} (question_id {record['question_id']}): needs a 'question' (or 'text') string")
        key = str(record["question_id"])
        if key in seen:
            raise LlavaLnError(f"{where}: question_id {record['question_id']} appears twice")
        seen.add(key)
        image = image_file(sources["image_folder"], _image_name(record, subtype, where),
                           f"{where} (question_id {record['question_id']})")
        items.append(EvalItem(key=key, image=image, prompt=with_suffix(question, prompt_suffix),
                              record={"question_id": record["question_id"]}))
    return items


def write_outputs(sources: dict, items: list, answers: dict, output_dir: str) -> dict:
    results = os.path.join(output_dir, RESULTS_FILE)
    rows = [{"question_id": item.record["question_id"], "answer": answers[item.key]} for item in items]
    outputs = {"files": {"results": results}, "counts": {"results": write_vqa_results(results, rows)}}
    request = ScoreRequest(benchmark="vqav2", predictions=results)
    if sources["annotations"]:
        request.annotations, request.questions = sources["annotations"], sources["questions"]
    if sources["upload_questions"]:
        upload = os.path.join(output_dir, UPLOAD_FILE)
        outputs["counts"]["upload"] = write_vqav2_testdev_upload(upload, sources["upload_questions"], rows)
        outputs["files"]["upload"] = upload
        if not sources["annotations"]:
            # Nothing to score locally: the scorer re-checks the upload's coverage instead.
            request.questions, request.upload_file = sources["upload_questions"], upload
    outputs["score"] = request
    return outputs
