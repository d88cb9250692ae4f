"""POPE scoring as the official evaluate.py (and LLaVA's eval_pope.py) does it (metrics.md §3).

Parse (case-sensitive): keep the text before the first "."; delete ","; split on " "; the
answer is "no" when a token is exactly "No", "no" or "not", else "yes". Labels: "no" is the
negative class, anything else positive. Answers pair with labels by position within a split.

Beyond the official tool:
- answer and label counts that differ would shift every later pair, so we then pair by
  question_id instead and count the missing and extra answers (an error if ids are absent);
- equal counts keep positional pairing, and positions whose question_ids disagree are counted;
- an answer record without a string "text" (or "answer") is left out of the metrics and counted;
- a ratio whose denominator is 0 is None (JSON null) and named under "undefined". F1 is
  2PR/(P+R) when that is defined, else 2TP/(2TP+FP+FN) (the same quantity), so predicting no
  "yes" at all gives F1 = 0 while precision is undefined.
"""
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.jsonio import canonical_id, read_json_or_jsonl

NEGATIVE_TOKENS = ("No", "no", "not")


def parse_pope_answer(text: str) -> str:
    """'yes' or 'no' by the official first-sentence token rule."""
    first_sentence = text.split(".")[0]
    tokens = first_sentence.replace(",", "").split(" ")
    return "no" if any(token in NEGATIVE_TOKENS for token in tokens) else "yes"


def _ratio(numerator: int, denominator: int):
    return numerator / denominator if denominator else None


def pope_metrics(labels: list, answers: list) -> dict:
    """Metrics for one split from paired label strings and parsed answers ("yes"/"no")."""
    if len(labels) != len(answers):
        raise ValueError(f"{len(labels)} labels but {len(answers)} answers")
    tp = fp = tn = fn = 0
    for label, answer in zip(labels, answers):
        positive_label, positive_answer = label != "no", answer != "no"
        if positive_answer:
            tp, fp = tp + positive_label, fp + (not positive_label)
        else:
            fn, tn = fn + positive_label, tn + (not positive_label)
    total = len(labels)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    metrics = {
        "accuracy": _ratio(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": _ratio(tp + fp, total),
        "questions": total,
        "counts": {"TP": tp, "FP": fp, "TN": tn, "FN": fn},
    }
    undefined = [name for name in ("accuracy", "precision", "recall", "f1", "yes_ratio") if metrics[name] is None]
    if undefined:
        metrics["undefined"] = undefined
    return metrics


def _answer_text(record):
    if not isinstance(record, dict):
        return None
    text = record.get("text", record.get("answer"))
    return text if isinstance(text, str) else None


def pair_split(label_records: list, answer_records: list, where: str = "POPE") -> tuple[list, list, dict]:
    """(labels, answer texts, info): positional when the counts match, else by question_id."""
    info = {"pairing": "position", "missing": 0, "extra": 0, "id_mismatches": 0}
    if len(label_records) == len(answer_records):
        pairs = list(zip(label_records, answer_records))
        for label, answer in pairs:
            label_id = canonical_id(label.get("question_id"))
            answer_id = canonical_id(answer.get("question_id")) if isinstance(answer, dict) else None
            info["id_mismatches"] += label_id is not None and answer_id is not None and label_id != answer_id
    else:
        label_ids = [canonical_id(label.get("question_id")) for label in label_records]
        answer_ids = [canonical_id(a.get("question_id")) if isinstance(a, dict) else None for a in answer_records]
        if None in label_ids or None in answer_ids or len(set(label_ids)) != len(label_ids):
            raise LlavaLnError(
                f"{where}: {len(answer_records)} answers for {len(label_records)} labels, and the records lack "
                "unique question_ids to pair them by"
            )
        by_id = dict(zip(answer_ids, answer_records))  # a repeated id keeps its last answer
        pairs = [(label, by_id[qid]) for label, qid in zip(label_records, label_ids) if qid in by_id]
        known = set(label_ids)
        info.update(pairing="question_id", missing=len(label_records) - len(pairs),
                    extra=sum(1 for qid in by_id if qid not in known))
    labels, texts, invalid = [], [], 0
    for label, answer in pairs:
        text = _answer_text(answer)
        if text is None:
            invalid += 1
            continue
        labels.append(label["label"])
        texts.append(text)
    info["invalid_answers"] = invalid
    return labels, texts, info


def score_pope(splits: dict) -> dict:
    """{"splits": {name: metrics}, "mean_f1"} from {name: (label_records, answer_records)}."""
    results = {}
    for name, (label_records, answer_records) in splits.items():
        labels, texts, info = pair_split(label_records, answer_records, where=f"POPE split {name!r}")
        metrics = pope_metrics(labels, [parse_pope_answer(text) for text in texts])
        metrics.update(info)
        results[name] = metrics
    f1s = [metrics["f1"] for metrics in results.values()]
    mean_f1 = sum(f1s) / len(f1s) if f1s and None not in f1s else None
    return {"splits": results, "mean_f1": mean_f1}


def split_paths(argument: str, flag: str) -> dict:
    """{split: path} from "random=a.jsonl,popular=b.jsonl", or {split: path} for one plain path.

    A plain path's split is its file name without extension and without a "coco_pope_" prefix.
    """
    if not argument:
        raise LlavaLnError(f"{flag} is required for --benchmark pope")
    if "=" not in argument:
        stem = os.path.splitext(os.path.basename(argument))[0]
        return {stem.removeprefix("coco_pope_") or stem: argument}
    paths = {}
    for item in argument.split(","):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise LlavaLnError(f"{flag}: expected split=path pairs separated by commas, got {item!r}")
        if name.strip() in paths:
            raise LlavaLnError(f"{flag}: split {name.strip()!r} given twice")
        paths[name.strip()] = path.strip()
    return paths


def _read_records(path: str, what: str) -> list:
    payload = read_json_or_jsonl(path, what)
    records = [payload] if isinstance(payload, dict) else payload
    if not isinstance(records, list):
        raise LlavaLnError(f"{what} file {path} must hold JSON lines or a JSON list of records")
    return records


def _read_labels(path: str) -> list:
    records = _read_records(path, "POPE annotations")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("label"), str):
            raise LlavaLnError(f"POPE annotations file {path}, record {index} has no string 'label'")
    return records


def score_pope_files(annotations: str, predictions: str) -> dict:
    """Score --annotations/--predictions arguments (a path each, or split=path lists)."""
    label_paths = split_paths(annotations, "--annotations")
    answer_paths = split_paths(predictions, "--predictions")
    if len(label_paths) == 1 and len(answer_paths) == 1:
        # Two plain paths form one split, named after the annotation file.
        answer_paths = {next(iter(label_paths)): next(iter(answer_paths.values()))}
    if set(label_paths) != set(answer_paths):
        raise LlavaLnError(
            f"POPE splits differ: --annotations has {sorted(label_paths)}, --predictions has {sorted(answer_paths)}"
        )
    splits = {
        name: (_read_labels(path), _read_records(answer_paths[name], "POPE predictions"))
        for name, path in label_paths.items()
    }
    return score_pope(splits)
