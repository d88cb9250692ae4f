"""Byte-stable, atomic writers for the toy world's files (JSON, JSON lines, text, PNG).

Same content must give the same bytes on every run: JSON keys keep insertion order, the
separators and indentation are fixed, files end with one newline, and PNGs are encoded
with fixed settings. Each file is written to a temporary name in its folder and then
renamed, so an interrupted run never leaves a half-written file under the final name.
"""
import json
import os
import tempfile


def write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_text(obj, indent: int | None = 1) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent, separators=(",", ": ") if indent else (", ", ": ")) + "\n"


def write_json(path: str, obj, indent: int | None = 1) -> None:
    write_text(path, json_text(obj, indent))


def write_jsonl(path: str, rows) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
