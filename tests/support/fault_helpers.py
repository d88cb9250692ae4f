"""Fault injection for the reliability tests: damaged files, planted pickles, one-line error checks."""
import os
import shutil
import sys

import pytest
import torch

from llava_ln.core.processes import run_in_group


class MarkerPayload:
    """Unpickling this runs code: it creates the marker file. No safe reader may ever let it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path: str, marker: str, tensors: dict | None = None) -> str:
    """A torch.save file at path that looks like named tensors but runs code when fully unpickled."""
    payload = dict(tensors or {"weight": torch.zeros(2)})
    payload["__payload__"] = MarkerPayload(marker)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(payload, path)
    return path


def flip_bit(path: str, where: str = "data") -> None:
    """Flip one bit: in the safetensors/JSON header ("header", byte 20) or in the data (the middle of the file)."""
    size = os.path.getsize(path)
    offset = min(20, size - 1) if where == "header" else size // 2 + (size // 4 if size > 64 else 0)
    offset = min(offset, size - 1)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x10]))


def truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(int(os.path.getsize(path) * keep))


DAMAGES = {"truncated": lambda path: truncate(path), "header_bit": lambda path: flip_bit(path, "header"),
           "data_bit": lambda path: flip_bit(path, "data")}


def copy_tree(source: str, target: str) -> str:
    shutil.copytree(source, target)
    return target


def one_line(err: BaseException) -> str:
    """The message of a user-facing error, asserted to be exactly one line."""
    message = str(err)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def refused(call, *patterns, kind=None) -> str:
    """Run call, which must raise kind (a LlavaLnError by default) with a one-line message holding every pattern."""
    from llava_ln.core.errors import LlavaLnError

    with pytest.raises(kind or LlavaLnError) as caught:
        call()
    message = one_line(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    return message


def snapshot(folder: str) -> dict:
    """relative path -> bytes of every file under folder (to prove nothing saved was lost or changed)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, folder)] = handle.read()
    return files


def run_cli(*argv: str, timeout: int = 900) -> tuple[int, str]:
    """`llava-ln ARGV` in a fresh process (what a user sees): (exit status, stderr)."""
    done = run_in_group([sys.executable, "-m", "llava_ln.cli", *argv], capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return done.returncode, done.stderr


def error_lines(stderr: str) -> list:
    """The `llava-ln: error:` lines of a command's stderr (progress bars and logs are other lines)."""
    return [line for line in stderr.splitlines() if line.startswith("llava-ln: error:")]
