"""LLaVA's answer file (what llava/eval/model_vqa_loader.py writes), so LLaVA's own scripts read our answers.

  OUTPUT_DIR/llava_answers.jsonl   {"question_id", "prompt", "text", "answer_id", "model_id", "metadata": {}}

Written for --benchmark generic always, and for mme / pope / vqav2 (and the caption sets) with
--answers_format llava, beside the official files. The question ids are the ones LLaVA's question
files use, so each of LLaVA's converters finds what it looks for:
  generic   the question file's own ids, in its order;
  mme       "<subtask>/<image path in the release folder>" (LLaVA's llava_mme.jsonl): convert_answer_to_mme.py
            takes the subtask and the image's .txt from it and the question from "prompt"; an image's two
            questions stay on consecutive lines, as the MME tool pairs them;
  vqav2     the VQAv2 question ids (convert_vqav2_for_submission.py reads merge.jsonl in this format);
  pope      ids unique across the three splits, as LLaVA's llava_pope_test.jsonl numbers them (its own ids
            when that file lies in --data, else 1..N in split order), answers in label-file order per split,
            plus OUTPUT_DIR/llava_pope_questions.jsonl, the matching question file ({"question_id", "image",
            "text", "category"}) that eval_pope.py and `llava-ln score --questions` take;
  captions  the image ids.
answer_id is derived from the model, question and answer (LLaVA draws a random one), so a rerun writes
the same bytes; model_id is the checkpoint folder's name, as LLaVA's get_model_name_from_path gives it.
"""
import json
import os
import uuid

from llava_ln.core.atomic import atomic_path
from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import read_jsonl

ANSWERS_FILE = "llava_answers.jsonl"
POPE_QUESTIONS_FILE = "llava_pope_questions.jsonl"
LLAVA_POPE_QUESTIONS = "llava_pope_test.jsonl"


def model_id(model_path: str) -> str:
    """LLaVA's get_model_name_from_path: the folder name, parent-prefixed for checkpoint-<step> folders."""
    parts = os.path.abspath(model_path).rstrip(os.sep).split(os.sep)
    return f"{parts[-2]}_{parts[-1]}" if parts[-1].startswith("checkpoint-") and len(parts) > 1 else parts[-1]


def answer_id(model: str, question_id, text: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"llava-ln/{model}/{question_id}/{text}").hex


def _mme_question_id(sources: dict, item) -> str:
    relative = os.path.relpath(item.image, sources["root"])
    if relative.startswith(".."):  # --image_folder put the images elsewhere: LLaVA's flat form
        relative = f"{item.record['subtask']}/{os.path.basename(item.image)}"
    return relative.replace(os.sep, "/")


def _pope_ids(sources: dict, items: list) -> list:
    """Question ids unique across splits: LLaVA's own (from llava_pope_test.jsonl beside the labels) or 1..N."""
    labels = os.path.dirname(next(iter(sources["labels"].values())))
    own = next((p for p in (os.path.join(d, LLAVA_POPE_QUESTIONS) for d in (labels, os.path.dirname(labels)))
                if os.path.isfile(p)), None)
    if own:
        by_split = {}
        for record in read_jsonl(own, "LLaVA POPE questions"):
            by_split.setdefault(record.get("category"), []).append(record.get("question_id"))
        counts = {}
        for item in items:
            counts[item.group] = counts.get(item.group, 0) + 1
        if all(len(by_split.get(split, ())) == count for split, count in counts.items()):
            position = {split: 0 for split in counts}
            ids = []
            for item in items:
                ids.append(by_split[item.group][position[item.group]])
                position[item.group] += 1
            return ids
    return list(range(1, len(items) + 1))


def question_ids(benchmark: str, sources: dict, items: list) -> list:
    if benchmark == "mme":
        return [_mme_question_id(sources, item) for item in items]
    if benchmark == "pope":
        return _pope_ids(sources, items)
    if benchmark in ("generic", "vqav2"):
        return [item.record["question_id"] for item in items]
    if "image_id" in (items[0].record if items else {}):
        return [item.record["image_id"] for item in items]
    raise LlavaLnError(f"--answers_format llava: no LLaVA question ids for --benchmark {benchmark}")


def write_llava_answers(benchmark: str, sources: dict, items: list, answers: dict, output_dir: str,
                        model_path: str) -> dict:
    """Write the LLaVA answer file (and POPE's matching question file); returns {name: path}."""
    model = model_id(model_path)
    ids = question_ids(benchmark, sources, items)
    rows = [{"question_id": qid, "prompt": item.prompt, "text": answers[item.key],
             "answer_id": answer_id(model, qid, answers[item.key]), "model_id": model, "metadata": {}}
            for qid, item in zip(ids, items)]
    files = {"llava_answers": os.path.join(output_dir, ANSWERS_FILE)}
    _write_jsonl(files["llava_answers"], rows)
    if benchmark == "pope":
        files["llava_questions"] = os.path.join(output_dir, POPE_QUESTIONS_FILE)
        _write_jsonl(files["llava_questions"], [
            {"question_id": qid, "image": item.record["image"], "text": item.prompt, "category": item.group}
            for qid, item in zip(ids, items)])
    return files


def _write_jsonl(path: str, rows: list) -> None:
    with atomic_path(path, ".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
