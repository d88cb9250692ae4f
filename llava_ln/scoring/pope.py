"""POPE scoring as the official evaluate.py (and LLaVA's eval_pope.py) does it (docs/scoring.md §4).

Parse (case-sensitive): keep the text before the first "."; delete ","; split on " "; the
answer is "no" when a token is exactly "No", "no" or "not", else "yes". Labels: "no" is the
negative class, anything else positive. Metrics per split; the headline is the mean F1.

Pairing (docs/scoring.md §4.4): equal answer and label counts pair by position, as the official
tool does (positions whose question_ids disagree are counted); different counts pair by question_id.
A label without an answer is an error unless allow_missing, and an answer record without a string
"text" (or "answer") is invalid; both are then scored as the opposite of the label (§1.2-1.3).

One answer file for several splits (docs/scoring.md §4.5), e.g. LLaVA's single answers file: each
answer's split comes from its own "category" field, else from LLaVA's question file (--questions,
whose lines carry "category"), else from its question_id when no id is in two splits, else from
the one order of the label files whose ids (and prompts/images, when the answers carry them)
match the file block by block. Anything still ambiguous is refused, saying what to pass instead.

A ratio whose denominator is 0 is None (JSON null) and named under "undefined". F1 is 2PR/(P+R)
when that is defined, else 2TP/(2TP+FP+FN) (the same quantity), so predicting no "yes" at all
gives F1 = 0 while precision is undefined.
"""
import glob
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import canonical_id, read_records, refuse_missing

NEGATIVE_TOKENS = ("No", "no", "not")
LABEL_PREFIX = "coco_pope_"


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


def _record_id(record):
    return canonical_id(record.get("question_id")) if isinstance(record, dict) else None


def pair_split(label_records: list, answer_records: list, where: str = "POPE",
               allow_missing: bool = False) -> tuple[list, list, dict]:
    """(labels, parsed answers, info): positional when the counts match, else by question_id.

    A missing or invalid answer is parsed as the opposite of its label, so it always counts as wrong.
    """
    info = {"pairing": "position", "missing": 0, "extra": 0, "id_mismatches": 0}
    answer_ids = [_record_id(answer) for answer in answer_records]
    seen = [qid for qid in answer_ids if qid is not None]
    info["duplicate_ids"] = len(seen) - len(set(seen))  # a repeated question_id: its last answer counts (§1.3)
    if len(label_records) == len(answer_records):
        pairs = list(zip(label_records, answer_records))
        for label, answer in pairs:
            label_id, answer_id = _record_id(label), _record_id(answer)
            info["id_mismatches"] += label_id is not None and answer_id is not None and label_id != answer_id
    else:
        label_ids = [_record_id(label) for label in label_records]
        if None in label_ids or None in answer_ids or len(set(label_ids)) != len(label_ids):
            raise LlavaLnError(
                f"{where}: {len(answer_records)} answers for {len(label_records)} labels, and the records lack "
                "unique question_ids to pair them by"
            )
        by_id = dict(zip(answer_ids, answer_records))  # a repeated id keeps its last answer
        refuse_missing(where, [qid for qid in label_ids if qid not in by_id], len(label_ids),
                       "labelled questions", allow_missing)
        pairs = [(label, by_id.get(qid)) for label, qid in zip(label_records, label_ids)]
        known = set(label_ids)
        info.update(pairing="question_id", missing=sum(answer is None for _, answer in pairs),
                    extra=sum(1 for qid in by_id if qid not in known))
    labels, parsed, invalid = [], [], 0
    for label, answer in pairs:
        text = _answer_text(answer)
        invalid += answer is not None and text is None
        labels.append(label["label"])
        parsed.append(parse_pope_answer(text) if text is not None else ("yes" if label["label"] == "no" else "no"))
    info["invalid_answers"] = invalid
    return labels, parsed, info


def score_pope(splits: dict, allow_missing: bool = False) -> dict:
    """{"splits": {name: metrics}, "mean_f1", "missing"} from {name: (label_records, answer_records)}."""
    results = {}
    for name, (label_records, answer_records) in splits.items():
        labels, parsed, info = pair_split(label_records, answer_records, f"POPE split {name!r}", allow_missing)
        results[name] = {**pope_metrics(labels, parsed), **info}
    f1s = [metrics["f1"] for metrics in results.values()]
    mean_f1 = sum(f1s) / len(f1s) if f1s and None not in f1s else None
    return {"splits": results, "mean_f1": mean_f1, "missing": sum(m["missing"] for m in results.values())}


# --- files and splits ----------------------------------------------------------------------------

def split_paths(argument: str, flag: str) -> dict:
    """{split: path} from "random=a.jsonl,popular=b.jsonl", or {split: path} for one plain path.

    A plain path's split is its file name without extension and without a "coco_pope_" prefix.
    """
    if not argument:
        raise LlavaLnError(f"{flag} is required for --benchmark pope")
    if "=" not in argument:
        stem = os.path.splitext(os.path.basename(argument))[0]
        return {stem.removeprefix(LABEL_PREFIX) or stem: argument}
    paths = {}
    for item in argument.split(","):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise LlavaLnError(f"{flag}: expected split=path pairs separated by commas, got {item!r}")
        if name.strip() in paths:
            raise LlavaLnError(f"{flag}: split {name.strip()!r} given twice")
        paths[name.strip()] = path.strip()
    return paths


def label_paths(argument: str) -> dict:
    """--annotations: split=path pairs, one label file, or a folder of coco_pope_<split>.json (LLaVA's coco/)."""
    if argument and os.path.isdir(argument):
        found = sorted(glob.glob(os.path.join(argument, LABEL_PREFIX + "*.json*")))
        if not found:
            raise LlavaLnError(f"--annotations folder {argument} holds no {LABEL_PREFIX}<split>.json label file")
        return {os.path.basename(p).split(".")[0].removeprefix(LABEL_PREFIX): p for p in found}
    return split_paths(argument, "--annotations")


def _read_labels(path: str) -> list:
    records = read_records(path, "POPE annotations")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("label"), str):
            raise LlavaLnError(f"POPE annotations file {path}, record {index} has no string 'label'")
    return records


def _question_places(path: str) -> tuple[dict, dict]:
    """({question_id: (category, position within it)}, {category: size}) from LLaVA's llava_pope_test.jsonl."""
    places, sizes = {}, {}
    for index, record in enumerate(read_records(path, "POPE questions")):
        qid, category = _record_id(record), record.get("category") if isinstance(record, dict) else None
        if qid is None or not isinstance(category, str):
            raise LlavaLnError(f"POPE questions file {path}, record {index} needs a question_id and a 'category'")
        if qid in places:
            raise LlavaLnError(f"POPE questions file {path}: question_id {qid} appears twice, so it cannot tell the split")
        places[qid], sizes[category] = (category, sizes.get(category, 0)), sizes.get(category, 0) + 1
    return places, sizes


def _same_question(answer, label) -> bool:
    """Whether an answer can be the one for this label: no image or prompt that says otherwise, and the
    same question_id or a prompt that starts with the label's question (LLaVA renumbers the ids)."""
    if not isinstance(answer, dict):
        return False
    if isinstance(answer.get("image"), str) and isinstance(label.get("image"), str) and answer["image"] != label["image"]:
        return False
    prompt, text = answer.get("prompt"), label.get("text")
    asked = prompt.strip().startswith(text.strip()) if isinstance(prompt, str) and isinstance(text, str) else None
    return asked is not False and (asked or _record_id(answer) == _record_id(label))


def _block_orders(answers: list, labels: dict) -> list:
    """Up to two orders of the splits under which the file is their label files' blocks, back to back."""
    found, fits = [], {}

    def fits_at(offset, name):
        if (offset, name) not in fits:
            block = answers[offset:offset + len(labels[name])]
            fits[offset, name] = len(block) == len(labels[name]) and all(map(_same_question, block, labels[name]))
        return fits[offset, name]

    def search(offset, order):
        if len(found) > 1:
            return
        if len(order) == len(labels):
            if offset == len(answers):
                found.append(order)
            return
        for name in labels:
            if name not in order and fits_at(offset, name):
                search(offset + len(labels[name]), order + [name])

    search(0, [])
    return found


def assign_splits(path: str, answers: list, labels: dict, questions: str | None) -> tuple[dict, int, str]:
    """({split: answers in file order}, unassigned answers, how) for one file that serves several splits."""
    names = list(labels)
    tags = [a.get("category") if isinstance(a, dict) and isinstance(a.get("category"), str) else None for a in answers]
    how = "category"
    if not set(tags) & set(names) and questions:
        places, sizes = _question_places(questions)
        for name in set(names) & set(sizes):
            if sizes[name] != len(labels[name]):
                raise LlavaLnError(f"POPE questions file {questions} has {sizes[name]} {name!r} questions but its label "
                                   f"file has {len(labels[name])}: not the same questions (LLaVA-1.5's random has 2910)")
        found = [places.get(_record_id(answer), (None, 0)) for answer in answers]
        tags, how = [tag for tag, _ in found], "questions"
        # The question file numbers its own ids; its n-th question of a split is the label file's n-th.
        answers = [{**a, "question_id": labels[tag][n].get("question_id")} if tag in labels and n < len(labels[tag])
                   else a for a, (tag, n) in zip(answers, found)]
    if not set(tags) & set(names) and len(names) == 1:
        return {names[0]: answers}, 0, "file"
    if not set(tags) & set(names):
        split_of_id = {}
        for name in names:
            for label in labels[name]:
                split_of_id.setdefault(_record_id(label), []).append(name)
        if all(len(owners) == 1 for owners in split_of_id.values()):
            tags, how = [(split_of_id.get(_record_id(answer)) or [None])[0] for answer in answers], "question_id"
        else:
            orders = _block_orders(answers, labels)
            if len(orders) != 1:
                reason = "several orders of the label files fit it" if orders else \
                    f"its {len(answers)} answers are not the label files' questions back to back"
                raise LlavaLnError(
                    f"POPE predictions file {path} answers splits {', '.join(names)} whose question ids overlap, and "
                    f"nothing tells which split each answer is for ({reason}); pass one file per split "
                    f"(--predictions {','.join(f'{n}={n}.jsonl' for n in names)}), a 'category' field on each answer, "
                    "or LLaVA's question file (--questions llava_pope_test.jsonl)")
            tags, how = [name for name in orders[0] for _ in labels[name]], "order"
            answers = [{**a, "question_id": label.get("question_id")}
                       for a, label in zip(answers, [label for name in orders[0] for label in labels[name]])]
    groups = {name: [a for a, tag in zip(answers, tags) if tag == name] for name in names}
    return groups, sum(tag not in labels for tag in tags), how


def score_pope_files(annotations: str, predictions: str, questions: str | None = None,
                     allow_missing: bool = False) -> dict:
    """Score --annotations/--predictions arguments (a path each, split=path lists, or one file for all splits)."""
    labels_at = label_paths(annotations)
    if "=" in (predictions or ""):
        answers_at = split_paths(predictions, "--predictions")
        if set(labels_at) != set(answers_at):
            raise LlavaLnError(
                f"POPE splits differ: --annotations has {sorted(labels_at)}, --predictions has {sorted(answers_at)}")
    else:  # one answer file serves every split
        path = next(iter(split_paths(predictions, "--predictions").values()))
        answers_at = {name: path for name in labels_at}
    labels = {name: _read_labels(path) for name, path in labels_at.items()}
    served = {}  # a file named for several splits holds answers for all of them
    for name, path in answers_at.items():
        served.setdefault(os.path.realpath(path), (path, []))[1].append(name)
    splits, how, unassigned = {}, {}, 0
    for path, names in served.values():
        groups, left, source = assign_splits(path, read_records(path, "POPE predictions"),
                                             {name: labels[name] for name in names}, questions)
        unassigned += left
        for name in names:
            splits[name], how[name] = (labels[name], groups[name]), source
    result = score_pope({name: splits[name] for name in labels}, allow_missing=allow_missing)
    for name, metrics in result["splits"].items():
        metrics["split_from"] = how[name]
    result["unassigned_answers"] = unassigned
    return result
