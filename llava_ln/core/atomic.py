"""Atomic file and folder writes: a crash mid-save leaves the previous version intact.

Each write goes to a temporary sibling in the same directory (same filesystem) and is then
moved into place with os.replace, which is atomic on POSIX.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_path(final_path: str, suffix: str = ""):
    """Yield a temporary path next to final_path; on success it replaces final_path."""
    directory = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, payload) -> None:
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")


@contextmanager
def atomic_directory(final_dir: str):
    """Yield a temporary directory; on success it replaces final_dir as a whole.

    An existing final_dir is moved aside first and removed only after the new one is in
    place, so at every instant one complete version exists on disk.
    """
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(final_dir) + "-", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.exists(final_dir):
            old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(final_dir) + "-", dir=parent)
            os.rmdir(old)
            os.replace(final_dir, old)
        os.replace(tmp, final_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
