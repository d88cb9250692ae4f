"""MME scoring as the official eval tool's calculation.py does it (docs/scoring.md §3).

A response is lower-cased; "yes"/"no" is looked for only in its first 4 characters ("yes"
wins over "no"); anything else is "other" and always wrong. Questions are paired by
consecutive lines in file order (not by image name). Per subtask:
score = 100 * acc + 100 * acc_plus; Perception sums 10 subtasks, Cognition 4.

`--mme_subtasks 8` sums Perception over 8 subtasks instead of 10, for comparison with numbers
from the paper authors' earlier code. We found no source that names those 8; our choice is the
10 perception subtasks minus `artwork` and `OCR` (the four coarse-grained ones plus posters,
celebrity, scene, landmark). Cognition is unchanged.

Missing answers (docs/scoring.md §1.2, §3.4): a line with only image, question and ground truth
(the eval tool's template line, never filled in) has no response; with a ground-truth folder
(`--annotations`, the eval tool's Your_Results templates) every template line must have a
prediction line with the same image and question, and lines come in the template's order. Either
kind of gap is an error unless allow_missing, which scores the answer as "other" (always wrong).

Where the official tool crashes, we return the defined value: a subtask whose responses are all
"other" scores 0; without a ground-truth folder, a missing or empty subtask file contributes 0 and
is listed.
"""
import os

from llava_ln.core.errors import LlavaLnError
from llava_ln.scoring.files import refuse_missing

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
PERCEPTION_8 = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
ALL_SUBTASKS = PERCEPTION + COGNITION


def parse_mme_response(response: str) -> str:
    """'yes', 'no' or 'other' by the official 4-character rule."""
    text = response.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_mme_subtask(pairs: list, allow_missing: bool = False) -> dict:
    """Score one subtask from (ground_truth, response) tuples in file order.

    Lines (1,2), (3,4), ... form one image each. A response of None is a missing answer: an
    error unless allow_missing, then "other". Raises ValueError on an odd line count, an
    empty list, or a ground truth that is not yes/no (the caller names the file).
    """
    if not pairs:
        raise ValueError("no questions")
    if len(pairs) % 2:
        raise ValueError(f"{len(pairs)} question lines: MME pairs consecutive lines, so the count must be even")
    refuse_missing("MME subtask", [f"question {i + 1}" for i, (_, r) in enumerate(pairs) if r is None],
                   len(pairs), "questions", allow_missing)
    correct = other = both_right = missing = 0
    for start in range(0, len(pairs), 2):
        image_correct = 0
        for offset in (0, 1):
            ground_truth, response = pairs[start + offset]
            ground_truth = ground_truth.lower()
            if ground_truth not in ("yes", "no"):
                raise ValueError(f"line {start + offset + 1}: ground truth {ground_truth!r} is neither yes nor no")
            missing += response is None
            parsed = "other" if response is None else parse_mme_response(response)
            other += parsed == "other"
            image_correct += parsed == ground_truth
        correct += image_correct
        both_right += image_correct == 2
    images = len(pairs) // 2
    acc, acc_plus = correct / len(pairs), both_right / images
    return {
        "score": acc * 100 + acc_plus * 100,
        "acc": acc,
        "acc_plus": acc_plus,
        "questions": len(pairs),
        "images": images,
        "other": other,
        "missing": missing,
    }


def score_mme(subtasks: dict, perception_subtasks: int = 10, sources: dict | None = None,
              allow_missing: bool = False) -> dict:
    """Perception, Cognition and per-subtask scores from {subtask: [(gt, response or None), ...]}.

    perception_subtasks is 10 (official) or 8 (see the module docstring). With sources
    ({subtask: file path}) a malformed subtask is a LlavaLnError naming its file.
    """
    if perception_subtasks not in (8, 10):
        raise ValueError(f"perception_subtasks must be 8 or 10, got {perception_subtasks}")
    refuse_missing("MME", [f"{name} question {i + 1}" for name, pairs in subtasks.items()
                           for i, (_, response) in enumerate(pairs) if response is None],
                   sum(len(pairs) for pairs in subtasks.values()), "questions", allow_missing)
    perception_set = PERCEPTION if perception_subtasks == 10 else PERCEPTION_8
    details, missing, empty = {}, [], []
    for name in ALL_SUBTASKS:
        if name not in subtasks:
            missing.append(name)
        elif not subtasks[name]:
            empty.append(name)
        else:
            try:
                details[name] = score_mme_subtask(subtasks[name], allow_missing=True)
            except ValueError as err:
                if sources is None or name not in sources:
                    raise
                raise LlavaLnError(f"MME file {sources[name]}: {err}") from None
    perception = sum(details[name]["score"] for name in perception_set if name in details)
    cognition = sum(details[name]["score"] for name in COGNITION if name in details)
    result = {
        "perception": perception,
        "cognition": cognition,
        "total": perception + cognition,
        "subtasks": {name: details[name]["score"] for name in ALL_SUBTASKS if name in details},
        "details": details,
        "perception_subtasks": list(perception_set),
        "missing_subtasks": missing,
        "empty_subtasks": empty,
        "unparsed_answers": sum(item["other"] - item["missing"] for item in details.values()),
        "missing": sum(item["missing"] for item in details.values()),
    }
    extra = sorted(set(subtasks) - set(ALL_SUBTASKS))
    if extra:
        result["extra_subtasks"] = extra
    return result


def read_mme_subtask_file(path: str) -> tuple[list, int]:
    """([(line number, image, question, ground truth, response or None), ...], blank line count).

    Lines are `image \\t question \\t ground_truth \\t response`; a line without the response
    field is the eval tool's unfilled template line (response None). Like the official tool we
    read with universal newlines; a response that contains a tab keeps it (the official tool
    would crash); blank lines are skipped and counted.
    """
    rows, blank = [], 0
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as err:
        raise LlavaLnError(f"MME file {path} is not UTF-8 text: {err}") from None
    for line_number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\n") else line
        if not line.strip():
            blank += 1
            continue
        fields = line.split("\t", 3)
        if len(fields) < 3:
            raise LlavaLnError(
                f"MME file {path} line {line_number} has {len(fields)} tab-separated field(s); "
                "expected image, question, ground truth, response"
            )
        rows.append((line_number, fields[0], fields[1], fields[2], fields[3] if len(fields) == 4 else None))
    return rows, blank


def _subtask_files(directory: str, what: str) -> dict:
    if not os.path.isdir(directory):
        raise LlavaLnError(f"MME {what} folder not found: {directory}")
    files = {os.path.splitext(f)[0]: os.path.join(directory, f) for f in sorted(os.listdir(directory))
             if f.endswith(".txt")}
    if not set(files) & set(ALL_SUBTASKS):
        raise LlavaLnError(f"MME {what} folder {directory} holds no subtask file; expected names like existence.txt, OCR.txt")
    return files


def _align(truth_path: str, truth_rows: list, answer_path: str | None, answer_rows: list) -> tuple[list, list, int]:
    """(pairs in template order, labels of template lines without a prediction, unmatched prediction lines)."""
    by_question = {}
    for row in answer_rows:  # a question asked twice for one image pairs by occurrence
        by_question.setdefault((row[1].strip(), row[2].strip()), []).append(row)
    pairs, missing = [], []
    for line_number, image, question, truth, _ in truth_rows:
        found = by_question.get((image.strip(), question.strip()))
        answer = found.pop(0) if found else None
        if answer is not None and answer[3].strip().lower() != truth.strip().lower():
            raise LlavaLnError(f"MME file {answer_path} line {answer[0]}: ground truth {answer[3]!r} but "
                               f"{truth_path} line {line_number} says {truth!r}")
        if answer is None or answer[4] is None:
            missing.append(f"{os.path.basename(truth_path)} line {line_number}")
        pairs.append((truth, None if answer is None else answer[4]))
    return pairs, missing, sum(len(rows) for rows in by_question.values())


def score_mme_dir(directory: str, perception_subtasks: int = 10, annotations: str | None = None,
                  allow_missing: bool = False) -> dict:
    """Score a folder holding one `<subtask>.txt` per subtask (the official eval-tool input).

    annotations, when given, is the folder of template files (image, question, ground truth):
    it fixes which questions must be answered and their order.
    """
    files = _subtask_files(directory, "predictions")
    read = {name: read_mme_subtask_file(path) for name, path in files.items()}
    blank_lines = sum(blank for _, blank in read.values())
    subtasks, sources, missing, extra_lines = {}, dict(files), [], 0
    if annotations:
        for name, truth_path in _subtask_files(annotations, "ground-truth").items():
            truth_rows, _ = read_mme_subtask_file(truth_path)
            sources[name] = truth_path  # the template fixes the lines, so its file is the one to name
            rows = read[name][0] if name in read else []
            subtasks[name], gaps, extra = _align(truth_path, truth_rows, files.get(name), rows)
            missing, extra_lines = missing + gaps, extra_lines + extra
        extra_lines += sum(len(rows) for name, (rows, _) in read.items() if name not in subtasks)
    else:
        for name, (rows, _) in read.items():
            subtasks[name] = [(truth, response) for _, _, _, truth, response in rows]
            missing += [f"{name}.txt line {row[0]}" for row in rows if row[4] is None]
    total = sum(len(pairs) for pairs in subtasks.values())
    refuse_missing(f"MME predictions {directory}", missing, total, "questions", allow_missing)
    result = score_mme(subtasks, perception_subtasks, sources, allow_missing=True)
    result["blank_lines"] = blank_lines
    if annotations:
        result["extra_answers"] = extra_lines
    return result
