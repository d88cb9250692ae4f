"""JSON from files we do not control, read with every size bounded before memory is committed.

Python's json module trusts its input: a file that is a link to /dev/zero (or a FIFO) is read until
memory runs out, `[[[[...` nested 100000 deep raises RecursionError, a 5000-digit number raises
ValueError (Python's integer-conversion limit), and NaN/Infinity are accepted. Every JSON read of a
user's file goes through this module instead (tests/reliability/test_no_code_from_files.py keeps it
so), and each of those becomes JsonLimitError, a LlavaLnError naming the file:
  * only a regular file is read, at most `max_bytes` of it (a metadata file has no reason to be
    large; data files pass max_bytes=None and are bounded by their own size);
  * nesting deeper than MAX_DEPTH is refused (no JSON that llava-ln reads nests more than a few
    levels; deeper values would break recursive code further on, such as copy.deepcopy);
  * a number longer than MAX_NUMBER_CHARS characters is refused, and so are NaN and Infinity.
"""
import json
import os
import stat
from contextlib import contextmanager

from llava_ln.core.errors import LlavaLnError

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 64
METADATA_MAX_BYTES = 64 * 2**20  # manifests, configs, states, indexes: far below this in practice


class JsonLimitError(LlavaLnError, ValueError):
    """A JSON text that breaks a bound (or is not JSON); the message names where it came from.

    Also a ValueError, so that code which already treats a malformed file as a ValueError keeps doing so."""


class _Refused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"the number {text[:20]} overflows to infinity")
    return value


def _constant(name: str):
    raise _Refused(f"{name}, which is not a JSON number")


DECODER = json.JSONDecoder(parse_int=_integer, parse_float=_real, parse_constant=_constant)


def depth_of(value, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a decoded value (a scalar is 0), counted without recursion; stops past limit."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _check_depth(value, where: str):
    if depth_of(value) > MAX_DEPTH:
        raise JsonLimitError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep")
    return value


def decode_at(text: str, position: int, where: str):
    """(value, end) of the JSON value starting at text[position] (records of a JSON array, one at a time).

    A syntax error stays json.JSONDecodeError (callers say where in their own terms); a broken bound is
    JsonLimitError.
    """
    try:
        value, end = DECODER.raw_decode(text, position)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JsonLimitError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep") from None
    except (_Refused, ValueError) as err:
        raise JsonLimitError(f"{where}: {err}") from None
    return _check_depth(value, where), end


def loads(text, where: str):
    """One JSON value from a str or bytes, bounded as the module docstring says."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonLimitError(f"{where} is not valid JSON: not UTF-8 text ({err.reason} at byte {err.start})"
                                 ) from None
    try:
        value, end = decode_at(text, _skip_space(text, 0), where)
    except json.JSONDecodeError as err:
        raise JsonLimitError(f"{where} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    if _skip_space(text, end) != len(text):
        raise JsonLimitError(f"{where} is not valid JSON (extra data after the value)")
    return value


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


@contextmanager
def _opened_regular(path: str, what: str, max_bytes: int | None):
    """An open binary handle on path and its size, once it is known to be a regular file within max_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        raise JsonLimitError(f"{what} {path}: no such file") from None
    except OSError as err:
        raise JsonLimitError(f"{what} {path}: cannot open it ({err.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise JsonLimitError(f"{what} {path}: not a regular file (a device, FIFO or socket); refusing to read it")
        if max_bytes is not None and info.st_size > max_bytes:
            raise JsonLimitError(f"{what} {path}: {info.st_size} bytes, more than the {max_bytes} such a file may have")
        yield handle, info.st_size


def check_regular_file(path: str, what: str, max_bytes: int | None) -> None:
    """Refuse (without reading it) a path that is not a regular file, or one over max_bytes."""
    with _opened_regular(path, what, max_bytes):
        pass


def read_bytes(path: str, what: str, max_bytes: int | None) -> bytes:
    """The bytes of a regular file, refusing anything else (a device, a FIFO) and files over max_bytes."""
    with _opened_regular(path, what, max_bytes) as (handle, size):
        limit = size if max_bytes is None else max_bytes
        try:
            payload = handle.read(limit + 1)
        except OSError as err:
            raise JsonLimitError(f"{what} {path}: cannot read it ({err.strerror})") from None
    if len(payload) > limit:
        raise JsonLimitError(f"{what} {path}: the file grew while it was read")
    return payload


def read_text(path: str, what: str, max_bytes: int | None) -> str:
    payload = read_bytes(path, what, max_bytes)
    try:
        return payload.decode("utf-8-sig")  # a leading byte-order mark (editors on Windows write one) is not JSON
    except UnicodeDecodeError as err:
        raise JsonLimitError(f"{what} {path} is not valid JSON: not UTF-8 text ({err.reason} at byte {err.start})"
                             ) from None


def read_json(path: str, what: str = "", max_bytes: int | None = METADATA_MAX_BYTES):
    """The JSON value in a file (what: how messages name it, e.g. "--deepspeed"; max_bytes None: no cap)."""
    where = f"{what} {path}".strip()
    return loads(read_text(path, what or "file", max_bytes), where)


def read_json_object(path: str, what: str = "", max_bytes: int | None = METADATA_MAX_BYTES) -> dict:
    value = read_json(path, what, max_bytes)
    if not isinstance(value, dict):
        raise JsonLimitError(f"{f'{what} {path}'.strip()} holds a JSON {type(value).__name__}, not an object")
    return value
