"""Readers for prediction and annotation files: every failure is a LlavaLnError naming the file."""
import json
import os

from llava_ln.core.errors import LlavaLnError


def _require_file(path: str, what: str) -> None:
    if not path:
        raise LlavaLnError(f"no {what} file given")
    if not os.path.isfile(path):
        raise LlavaLnError(f"{what} file not found: {path}")


def read_json(path: str, what: str):
    """The parsed content of a JSON file."""
    _require_file(path, what)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LlavaLnError(f"{what} file {path} is not valid JSON: {err}") from None


def read_jsonl(path: str, what: str) -> list:
    """One parsed object per non-blank line; a bad line is reported with its line number."""
    _require_file(path, what)
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise LlavaLnError(f"{what} file {path} line {line_number} is not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise LlavaLnError(f"{what} file {path} is not UTF-8 text: {err}") from None
    return records


def read_json_or_jsonl(path: str, what: str):
    """A JSON document, or a list of records when the file is JSON lines (LLaVA writes both)."""
    _require_file(path, what)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError:
        return read_jsonl(path, what)
    except UnicodeDecodeError as err:
        raise LlavaLnError(f"{what} file {path} is not UTF-8 text: {err}") from None


def require_list(payload, path: str, what: str, key: str | None = None) -> list:
    """payload itself (or payload[key]) as a list, else an error saying what shape was expected."""
    if key is not None and isinstance(payload, dict):
        if key not in payload:
            raise LlavaLnError(f"{what} file {path} has no {key!r} list")
        payload = payload[key]
    if not isinstance(payload, list):
        expected = f"a JSON list or an object with a {key!r} list" if key else "a JSON list"
        raise LlavaLnError(f"{what} file {path} must hold {expected}, found {type(payload).__name__}")
    return payload


def canonical_id(value):
    """Ids compare as ints when they are ints or digit strings ("42" == 42); None when unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isascii() and stripped.isdigit():
            return int(stripped)
        return stripped or None
    return None
