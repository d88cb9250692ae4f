"""Any LLaVA question file: what LLaVA's model_vqa / model_vqa_loader read, answered the same way.

Read: --question_file Q.jsonl, JSON lines {"question_id", "image", "text", ...} (LLaVA's
llava_pope_test.jsonl, llava_mme.jsonl, llava_vqav2_mscoco_test-dev2015.jsonl, a TextVQA or GQA file,
or one of your own), and --image_folder, which each "image" is relative to (--data may name a folder
holding the question file's images instead). The question is asked as written: LLaVA's question files
carry their own instruction line, so no prompt is added unless --prompt gives one.

Written: OUTPUT_DIR/llava_answers.jsonl, LLaVA's answer file, one line per question in question-file
order: {"question_id", "prompt", "text", "answer_id", "model_id", "metadata": {}} (evaluation.llava_answers).
A question file has no ground truth, so nothing is scored here: the benchmark's own tools read the
answer file (LLaVA's eval_pope.py, convert_answer_to_mme.py, convert_vqav2_for_submission.py, or
`llava-ln score --benchmark pope --questions Q.jsonl`).
"""
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.evaluation.benchmarks.common import (
    DataFlags,
    EvalItem,
    image_file,
    reject_unused,
    require_file,
    with_suffix,
)
from llava_ln.scoring.files import read_jsonl


def locate(flags: DataFlags) -> dict:
    reject_unused(flags, "generic", used=("question_file",))
    if not flags.question_file:
        raise LlavaLnError("--benchmark generic needs --question_file (LLaVA's question JSONL)")
    questions = require_file(flags.question_file, "--question_file")
    folder = flags.image_folder or flags.data
    if not folder:
        raise LlavaLnError("--benchmark generic needs --image_folder (where the question file's images are)")
    if not os.path.isdir(folder):
        raise LlavaLnError(f"--image_folder: folder not found: {folder}")
    return {"questions": questions, "image_folder": os.path.abspath(folder)}


def read_items(sources: dict, prompt_suffix: str) -> list[EvalItem]:
    path = sources["questions"]
    items, seen = [], set()
    for index, record in enumerate(read_jsonl(path, "LLaVA questions")):
        where = f"question file {path}, line {index + 1}"
        if not isinstance(record, dict) or any(k not in record for k in ("question_id", "image", "text")):
            raise LlavaLnError(f"{where}: needs 'question_id', 'image' and 'text'")
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise LlavaLnError(f"{where}: 'text' must be a non-empty string")
        key = str(record["question_id"])
        if key in seen:
            raise LlavaLnError(f"{where}: question_id {record['question_id']} appears twice")
        seen.add(key)
        image = image_file(sources["image_folder"], record["image"], f"{where} (question_id {record['question_id']})")
        items.append(EvalItem(key=key, image=image, prompt=with_suffix(record["text"], prompt_suffix),
                              group=str(record.get("category", "")), record={"question_id": record["question_id"]}))
    return items


def write_outputs(sources: dict, items: list, answers: dict, output_dir: str) -> dict:
    """Nothing benchmark-specific to write: the runner writes the LLaVA answer file for every generic run."""
    return {"files": {}, "counts": {"questions": len(items)}, "score": None}
