"""LLaVA-format records: read JSON (one array) and JSONL (one object per line) files, and validate each.

Records are kept as their own UTF-8 JSON bytes in one numpy buffer plus offsets, not as Python
dicts: 665K dicts cost gigabytes, and DataLoader workers touching their reference counts would
copy every page into each worker (copy-on-write). A numpy buffer is shared untouched, and a record
is decoded only when its sample is read.

A valid record is `{"id", "conversations": [{"from": "human"|"gpt", "value": str}, ...],
"image"?: str | [str]}`: turns alternate human, gpt, ..., end with a gpt reply, no value is empty,
and the human turns hold exactly one `<image>` tag per image (none in gpt turns). parse_record
turns one into a Conversation or says exactly what is wrong with it.

Reading is bounded (core.bounded_json): a data file must be a regular file (a link to /dev/zero is
refused, not read until memory runs out), and a record nested deeper than the JSON bound or holding
a number thousands of digits long is a bad record like any other malformed one (skipped with
--skip_bad_samples), not a RecursionError or ValueError traceback.

Every string of a record must also be text the tokenizer can take: JSON can spell a lone UTF-16
surrogate ("\\ud800"), which Python decodes into a str that cannot be encoded as UTF-8, and which
fast tokenizers reject with a TypeError mid-run. Such a record is refused while indexing, like any
other malformed one (unencodable). Whatever else a tokenizer rejects when a sample is read is the
dataset's to skip (--skip_bad_samples) or to report.
"""
import json
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from llava_ln.core.bounded_json import JsonLimitError, decode_at, loads, read_text
from llava_ln.core.constants import IMAGE_TOKEN
from llava_ln.core.errors import LlavaLnError

_WHITESPACE = re.compile(r"\s*")


def _json_error(path: str, err: json.JSONDecodeError) -> LlavaLnError:
    return LlavaLnError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}")


@dataclass(frozen=True)
class UnreadableRecord:
    """A record whose JSON breaks a bound of core.bounded_json; parse_record makes it a RecordError."""

    problem: str


def _read_text(path: str) -> str:
    try:
        return read_text(path, "data file", max_bytes=None)
    except JsonLimitError as err:
        message = str(err)
        if message.endswith("no such file"):
            raise LlavaLnError(f"{path}: data file not found") from None
        raise LlavaLnError(message.replace(f"data file {path}:", f"{path}: cannot read the data file:")) from None


def _value_end(text: str, start: int) -> int | None:
    """Where the JSON value at text[start] ends, by brackets and strings alone (used only to step over a record
    the decoder refused); None when the text gives no end."""
    depth, position = 0, start
    while position < len(text):
        char = text[position]
        if char == '"':
            position += 1
            while position < len(text) and text[position] != '"':
                position += 2 if text[position] == "\\" else 1
            if position >= len(text):
                return None
            if depth == 0:
                return position + 1
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return position
            depth -= 1
            if depth == 0:
                return position + 1
        elif depth == 0 and (char == "," or char.isspace()):
            return position
        position += 1
    return None


def _iter_array(path: str, text: str, start: int) -> Iterator[tuple[object, str]]:
    """Elements of a top-level JSON array, each with its own source text (parsed one at a time)."""
    pos = _WHITESPACE.match(text, start + 1).end()
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            obj, end = decode_at(text, pos, path)
        except json.JSONDecodeError as err:
            raise _json_error(path, err) from None
        except JsonLimitError as err:
            end = _value_end(text, pos)
            if end is None:
                raise LlavaLnError(str(err)) from None
            obj = UnreadableRecord(str(err).removeprefix(f"{path}: "))
        yield obj, text[pos:end]
        pos = _WHITESPACE.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = _WHITESPACE.match(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "]":
            if _WHITESPACE.match(text, pos + 1).end() != len(text):
                raise _json_error(path, json.JSONDecodeError("extra data after the array", text, pos + 1))
            return
        raise _json_error(path, json.JSONDecodeError("expected ',' or ']' between records", text, pos))


def _iter_lines(path: str, text: str) -> Iterator[tuple[object, str]]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield loads(line, path), line
        except JsonLimitError as err:
            if "is not valid JSON" in str(err):
                raise LlavaLnError(f"{path}: invalid JSON on line {line_number}: "
                                   f"{str(err).partition('is not valid JSON ')[2]}") from None
            yield UnreadableRecord(str(err).removeprefix(f"{path}: ")), line


def iter_records(path: str) -> Iterator[tuple[object, str]]:
    """(parsed record, its JSON text) for every record of a JSON-array or JSONL file, in file order.

    The format is told by content, not extension: a file starting with '[' is one array,
    anything else is read as one object per line (some `.json` files are really JSONL).
    """
    text = _read_text(path)
    start = _WHITESPACE.match(text).end()
    if start == len(text):
        raise LlavaLnError(f"{path}: the data file is empty")
    if text[start] == "[":
        yield from _iter_array(path, text, start)
    else:
        yield from _iter_lines(path, text)


class RecordStore:
    """Immutable, compact list of raw JSON records; `record(i)` decodes one on demand."""

    def __init__(self, raw_records: list[bytes]):
        lengths = np.fromiter((len(r) for r in raw_records), dtype=np.int64, count=len(raw_records))
        self._offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        self._buffer = np.frombuffer(b"".join(raw_records), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def raw(self, index: int) -> bytes:
        return self._buffer[self._offsets[index]:self._offsets[index + 1]].tobytes()

    def record(self, index: int):
        return loads(self.raw(index), f"record #{index}")

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes + self._offsets.nbytes


ROLES = {"human": "user", "gpt": "assistant"}


class RecordError(ValueError):
    """A record breaks the format; `record_id` is its id when it has a usable one."""

    def __init__(self, problem: str, record_id=None):
        super().__init__(problem)
        self.problem = problem
        self.record_id = record_id


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple  # ((role, text), ...) with role "user" or "assistant", alternating, user first
    images: tuple  # image paths as written in the record

    @property
    def pairs(self):
        """(user text, assistant reply) for each exchange."""
        return tuple((self.messages[k][1], self.messages[k + 1][1]) for k in range(0, len(self.messages), 2))

    def word_count(self) -> int:
        return sum(len(text.split()) for _, text in self.messages)


def unencodable(text: str) -> str | None:
    """Why text cannot be tokenized (a character UTF-8 cannot encode), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"holds {text[err.start]!r} at character {err.start}, which UTF-8 cannot encode (a lone surrogate)"
    return None


def _record_id(record: dict):
    if "id" not in record:
        raise RecordError("missing field 'id'")
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise RecordError(f"field 'id' must be a non-empty string or integer, got {value!r}")
    problem = unencodable(str(value))
    if problem:
        raise RecordError(f"field 'id' {problem}")
    return str(value)


def _images(record: dict, record_id: str) -> tuple:
    value = record.get("image")
    if value is None:
        return ()
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths:
        raise RecordError(f"field 'image' must be a path or a non-empty list of paths, got {value!r}", record_id)
    for path in paths:
        if not isinstance(path, str) or not path.strip():
            raise RecordError(f"field 'image' holds an empty or non-string path: {path!r}", record_id)
        problem = unencodable(path) or ("holds a NUL character" if "\0" in path else None)
        if problem:
            raise RecordError(f"field 'image' path {path!r} {problem}", record_id)
    return tuple(paths)


def _messages(record: dict, record_id: str) -> tuple:
    turns = record.get("conversations")
    if turns is None:
        raise RecordError("missing field 'conversations'", record_id)
    if not isinstance(turns, list) or not turns:
        raise RecordError("field 'conversations' must be a non-empty list of turns", record_id)
    messages = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError(f"turn {number} is not an object", record_id)
        for key in ("from", "value"):
            if key not in turn:
                raise RecordError(f"turn {number} is missing field '{key}'", record_id)
        speaker, value = turn["from"], turn["value"]
        if speaker not in ROLES:
            raise RecordError(f"turn {number} has 'from' {speaker!r}; expected 'human' or 'gpt'", record_id)
        expected = "human" if number % 2 == 0 else "gpt"
        if speaker != expected:
            raise RecordError(
                f"turns out of order: turn {number} is from {speaker!r} but {expected!r} was expected "
                "(turns alternate human, gpt, starting with human)", record_id)
        if not isinstance(value, str) or not value.strip():
            raise RecordError(f"turn {number} ({speaker}) has an empty or non-string 'value'", record_id)
        problem = unencodable(value)
        if problem:
            raise RecordError(f"turn {number} ({speaker}) {problem}", record_id)
        messages.append((ROLES[speaker], value))
    if len(messages) % 2:
        raise RecordError(f"the last turn ({len(messages) - 1}) is from 'human' and has no 'gpt' reply", record_id)
    return tuple(messages)


def _check_image_tags(messages: tuple, images: tuple, record_id: str) -> None:
    for number, (role, text) in enumerate(messages):
        if role == "assistant" and IMAGE_TOKEN in text:
            raise RecordError(f"turn {number} (gpt) contains {IMAGE_TOKEN}; images belong in human turns", record_id)
    tags = sum(text.count(IMAGE_TOKEN) for role, text in messages if role == "user")
    if tags != len(images):
        if not images:
            raise RecordError(f"has {tags} {IMAGE_TOKEN} tag(s) but no 'image' field", record_id)
        raise RecordError(f"has {len(images)} image(s) but {tags} {IMAGE_TOKEN} tag(s) in its human turns", record_id)


def parse_record(record) -> Conversation:
    """Validate a decoded JSON record; raises RecordError naming the problem."""
    if isinstance(record, UnreadableRecord):
        raise RecordError(record.problem)
    if not isinstance(record, dict):
        raise RecordError(f"is a JSON {type(record).__name__}, not an object")
    record_id = _record_id(record)
    images = _images(record, record_id)
    messages = _messages(record, record_id)
    _check_image_tags(messages, images, record_id)
    return Conversation(id=record_id, messages=messages, images=images)
