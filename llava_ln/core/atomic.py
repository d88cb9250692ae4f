"""Atomic file and folder writes: a crash mid-save leaves the previous version intact.

Each write goes to a temporary sibling in the same directory (same filesystem) and is then
moved into place with os.replace, which is atomic on POSIX.

mkstemp and mkdtemp create their temporaries 0600 / 0700 whatever the umask (so that nobody else
can read a half-written file); what finally lands is given the permissions an ordinary open() or
makedirs() would have given it (0666 / 0777 minus the umask), so a shared run folder stays readable
by the group when the umask says so.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str, directory: bool = False) -> None:
    """Give a mkstemp / mkdtemp temporary the mode an ordinary create would have had."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(final_path: str, suffix: str = ""):
    """Yield a temporary path next to final_path; on success it replaces final_path."""
    directory = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    honour_umask(tmp)
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
    honour_umask(tmp, directory=True)
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
