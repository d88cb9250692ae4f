"""Restartable answer files: append-only JSON lines, one file per rank, read back as {key: answer}.

OUTPUT_DIR/answers/
  settings.json        what produced the answers (model, benchmark data, prompt, generation);
                       a rerun with different settings is refused instead of mixing answers
  part-<rank>.jsonl    {"key", "answer", "prompt", "image_stamp"} per line, appended and flushed batch by batch

An answer is reused only for the question it answered: the same key, the same prompt text and the
same image file (image_stamp: its size and modification time). A question file edited between
runs, or an image replaced or rewritten, has those questions asked again instead of keeping an
answer to another question or picture (records written before image_stamp existed are reused).

A run killed mid-write leaves at most a torn last line: readers ignore it (the question is
asked again) and a writer cuts it off before appending. Every reused line is type-checked (a
string key, a string answer); a line of another shape is never copied into the official files,
its question is asked again. Every part file is read on restart,
whatever world size wrote it, so a run can resume on a different number of GPUs.
"""
import glob
import json
import logging
import os

from llava_ln.core import bounded_json
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.errors import LlavaLnError

logger = logging.getLogger(__name__)

ANSWERS_DIR = "answers"
SETTINGS_FILE = "settings.json"


def answers_dir(output_dir: str) -> str:
    return os.path.join(output_dir, ANSWERS_DIR)


def part_path(output_dir: str, rank: int) -> str:
    return os.path.join(answers_dir(output_dir), f"part-{rank:05d}.jsonl")


def answer_problem(record) -> str | None:
    """Why a decoded line is not a usable answer record, or None when it is one."""
    if not isinstance(record, dict):
        return f"it is a JSON {type(record).__name__}, not an object"
    key, answer, prompt = record.get("key"), record.get("answer"), record.get("prompt")
    if not isinstance(key, str) or not key:
        return f"its key is {key!r}, not a question key"
    if not isinstance(answer, str):
        return f"its answer is {'missing' if 'answer' not in record else type(answer).__name__}, not text"
    if prompt is not None and not isinstance(prompt, str):
        return f"its prompt is a {type(prompt).__name__}, not text"
    stamp = record.get("image_stamp")
    if stamp is not None and not isinstance(stamp, str):
        return f"its image_stamp is a {type(stamp).__name__}, not text"
    try:
        answer.encode("utf-8")
    except UnicodeEncodeError:
        return "its answer holds a character UTF-8 cannot encode"
    return None


def _read_part(path: str, records: dict) -> int:
    """Add a part file's usable records to records ({key: [record, ...]}); returns how many lines were unusable.

    An unusable line (not JSON, or an answer record of the wrong shape: "answer": 42, null, a
    list) is never reused: its question counts as unanswered and is asked again.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    bad = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = bounded_json.loads(line, f"{path} line {number}")
        except ValueError:
            torn_tail = number == len(lines) and not data.endswith(b"\n")
            if not torn_tail:
                logger.warning("%s line %d is not JSON; that question will be asked again", path, number)
            bad += 1
            continue
        problem = answer_problem(record)
        if problem:
            logger.warning("%s line %d is not a usable answer record (%s); that question will be asked again",
                           path, number, problem)
            bad += 1
            continue
        records.setdefault(record["key"], []).append(record)
    return bad


def read_records(output_dir: str) -> dict:
    """{key: [answer records]} from every part file, in file order. A key can have several: a question asked
    again (its text or image changed) by a run of another world size lands in another rank's file."""
    records = {}
    for path in sorted(glob.glob(os.path.join(answers_dir(output_dir), "part-*.jsonl"))):
        _read_part(path, records)
    return records


def read_answers(output_dir: str) -> dict:
    """{key: answer} from every part file (a later line wins over an earlier one)."""
    return {key: found[-1]["answer"] for key, found in read_records(output_dir).items()}


def image_stamp(path: str) -> str:
    """The image file as it was answered: size and modification time (a replaced or rewritten file differs)."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def answer_record(item, answer: str) -> dict:
    """What is stored for item's answer (item: an EvalItem)."""
    return {"key": item.key, "answer": answer, "prompt": item.prompt, "image_stamp": image_stamp(item.image)}


def reusable_answers(output_dir: str, items: list) -> dict:
    """{key: answer} for the items whose stored answer was given to the same prompt about the same image file."""
    records = read_records(output_dir)
    answers, stale, stamps = {}, [], {}
    for item in items:
        found = records.get(item.key)
        if not found:
            continue
        if item.image not in stamps:  # one stat per image, not per question (VQAv2 test-dev: 107k questions)
            try:
                stamps[item.image] = image_stamp(item.image)
            except OSError:
                stamps[item.image] = "unreadable"
        stamp = stamps[item.image]
        # The last record given to this very question, whichever file (rank) holds it.
        usable = [r for r in found if r.get("prompt") in (None, item.prompt) and r.get("image_stamp") in (None, stamp)]
        if not usable:
            stale.append(item.key)
            continue
        answers[item.key] = usable[-1]["answer"]
    if stale:
        logger.warning("%d stored answer(s) in %s were given to another question text or image file (first: %s); "
                       "those questions will be asked again", len(stale), answers_dir(output_dir), stale[0])
    return answers


def check_settings(output_dir: str, settings: dict) -> None:
    """Record the settings on a first run; on a rerun, refuse settings that differ from the recorded ones."""
    path = os.path.join(answers_dir(output_dir), SETTINGS_FILE)
    if not os.path.exists(path):
        write_json_atomic(path, settings)
        return
    try:
        recorded = bounded_json.read_json(path)
    except (OSError, ValueError) as err:
        raise LlavaLnError(f"{path} is unreadable ({err}); remove it or use another --output_dir") from None
    if not isinstance(recorded, dict):
        raise LlavaLnError(f"{path} holds a JSON {type(recorded).__name__}, not the settings object; remove it or "
                           "use another --output_dir")
    changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
    if changed:
        first = changed[0]
        raise LlavaLnError(
            f"{answers_dir(output_dir)} holds answers generated with other settings ({first}: {recorded.get(first)!r}, "
            f"now {settings.get(first)!r}; {len(changed)} setting(s) differ); use another --output_dir or --overwrite"
        )


class AnswerWriter:
    """Appends answer records to this rank's part file; each batch is flushed and fsynced."""

    def __init__(self, output_dir: str, rank: int):
        self.path = part_path(output_dir, rank)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        _cut_torn_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def append(self, records: list) -> None:
        self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cut_torn_tail(path: str) -> None:
    """Make the file end with a newline: a complete last record only lacked it; a torn one is dropped."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            bounded_json.loads(data[start:], path)
            handle.write(b"\n")
        except ValueError:
            handle.truncate(start)
