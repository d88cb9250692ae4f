"""Read LLaVA-format JSON (one array) and JSONL (one object per line) files into raw records.

Records are kept as their own UTF-8 JSON bytes in one numpy buffer plus offsets, not as
Python dicts: 665K dicts cost gigabytes, and DataLoader workers touching their reference
counts would copy every page into each worker (copy-on-write). A numpy buffer is shared
untouched, and a record is decoded only when its sample is read.
"""
import json
import re
from typing import Iterator

import numpy as np

from llava_ln.core.errors import LlavaLnError

_WHITESPACE = re.compile(r"\s*")


def _json_error(path: str, err: json.JSONDecodeError) -> LlavaLnError:
    return LlavaLnError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}")


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise LlavaLnError(f"{path}: data file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LlavaLnError(f"{path}: cannot read the data file ({err})") from None


def _iter_array(path: str, text: str, start: int) -> Iterator[tuple[object, str]]:
    """Elements of a top-level JSON array, each with its own source text (parsed one at a time)."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, start + 1).end()
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _json_error(path, err) from None
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
            yield json.loads(line), line
        except json.JSONDecodeError as err:
            raise LlavaLnError(f"{path}: invalid JSON on line {line_number} column {err.colno}: {err.msg}") from None


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
        return json.loads(self.raw(index))

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes + self._offsets.nbytes
