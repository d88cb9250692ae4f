"""MME scoring as the official eval tool's calculation.py does it (metrics.md §2).

A response is lower-cased; "yes"/"no" is looked for only in its first 4 characters ("yes"
wins over "no"); anything else is "other" and always wrong. Questions are paired by
consecutive lines in file order (not by image name). Per subtask:
score = 100 * acc + 100 * acc_plus; Perception sums 10 subtasks, Cognition 4.

`--mme_subtasks 8` sums Perception over 8 subtasks instead of 10, for comparison with numbers
from the paper authors' earlier code. We found no source that names those 8; our choice is the
10 perception subtasks minus `artwork` and `OCR` (the four coarse-grained ones plus posters,
celebrity, scene, landmark). Cognition is unchanged.

Where the official tool crashes, we return the defined value: a subtask whose responses are all
"other" scores 0; a missing or empty subtask file contributes 0 and is listed.
"""
import os

from llava_ln.core.errors import LlavaLnError

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


def score_mme_subtask(pairs: list) -> dict:
    """Score one subtask from (ground_truth, response) tuples in file order.

    Lines (1,2), (3,4), ... form one image each. Raises ValueError on an odd line count, an
    empty list, or a ground truth that is not yes/no (the caller names the file).
    """
    if not pairs:
        raise ValueError("no questions")
    if len(pairs) % 2:
        raise ValueError(f"{len(pairs)} question lines: MME pairs consecutive lines, so the count must be even")
    correct = other = both_right = 0
    for start in range(0, len(pairs), 2):
        image_correct = 0
        for offset in (0, 1):
            ground_truth, response = pairs[start + offset]
            ground_truth = ground_truth.lower()
            if ground_truth not in ("yes", "no"):
                raise ValueError(f"line {start + offset + 1}: ground truth {ground_truth!r} is neither yes nor no")
            parsed = parse_mme_response(response)
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
    }


def score_mme(subtasks: dict, perception_subtasks: int = 10, sources: dict | None = None) -> dict:
    """Perception, Cognition and per-subtask scores from {subtask: [(gt, response), ...]}.

    perception_subtasks is 10 (official) or 8 (see the module docstring). With sources
    ({subtask: file path}) a malformed subtask is a LlavaLnError naming its file.
    """
    if perception_subtasks not in (8, 10):
        raise ValueError(f"perception_subtasks must be 8 or 10, got {perception_subtasks}")
    perception_set = PERCEPTION if perception_subtasks == 10 else PERCEPTION_8
    details, missing, empty = {}, [], []
    for name in ALL_SUBTASKS:
        if name not in subtasks:
            missing.append(name)
        elif not subtasks[name]:
            empty.append(name)
        else:
            try:
                details[name] = score_mme_subtask(subtasks[name])
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
        "unparsed_answers": sum(item["other"] for item in details.values()),
    }
    extra = sorted(set(subtasks) - set(ALL_SUBTASKS))
    if extra:
        result["extra_subtasks"] = extra
    return result


def read_mme_subtask_file(path: str) -> tuple[list, int]:
    """([(gt, response), ...], blank_line_count) from one `<subtask>.txt` of the official layout.

    Lines are `image \\t question \\t ground_truth \\t response`. Like the official tool we read
    with universal newlines; a response that contains a tab keeps it (the official tool would
    crash); blank lines are skipped and counted.
    """
    pairs, blank = [], 0
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
        if len(fields) < 4:
            raise LlavaLnError(
                f"MME file {path} line {line_number} has {len(fields)} tab-separated field(s); "
                "expected image, question, ground truth, response"
            )
        pairs.append((fields[2], fields[3]))
    return pairs, blank


def score_mme_dir(directory: str, perception_subtasks: int = 10) -> dict:
    """Score a folder holding one `<subtask>.txt` per subtask (the official eval-tool input)."""
    if not os.path.isdir(directory):
        raise LlavaLnError(f"MME predictions folder not found: {directory}")
    subtasks, sources, blank_lines = {}, {}, 0
    for file_name in sorted(os.listdir(directory)):
        name, ext = os.path.splitext(file_name)
        if ext != ".txt":
            continue
        sources[name] = os.path.join(directory, file_name)
        pairs, blank = read_mme_subtask_file(sources[name])
        subtasks[name], blank_lines = pairs, blank_lines + blank
    if not set(subtasks) & set(ALL_SUBTASKS):
        raise LlavaLnError(
            f"MME predictions folder {directory} holds no subtask file; expected names like existence.txt, OCR.txt"
        )
    result = score_mme(subtasks, perception_subtasks, sources)
    result["blank_lines"] = blank_lines
    return result
