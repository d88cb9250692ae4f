"""Atomic file and folder writes: a crash mid-save leaves the previous version intact.

Each write goes to a temporary sibling in the same directory (same filesystem) and is then
moved into place with os.replace, which is atomic on POSIX. A folder that already exists is
swapped with its replacement in one step where the kernel can (renameat2 RENAME_EXCHANGE: Linux,
most local filesystems), so the name never stands empty; elsewhere the old version is first moved
aside. A process killed mid-write leaves its temporary behind under one of our two prefixes: the
next run in that folder puts back a folder that a kill caught between the two renames
(restore_interrupted_replacements) and removes the rest (remove_stale_temporaries);
recover_replacement does both for a single output folder's own leftovers beside it (merge, export).

mkstemp and mkdtemp create their temporaries 0600 / 0700 whatever the umask (so that nobody else
can read a half-written file); what finally lands is given the permissions an ordinary open() or
makedirs() would have given it (0666 / 0777 minus the umask), so a shared run folder stays readable
by the group when the umask says so.
"""
import ctypes
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

TMP_PREFIX = ".tmp-"  # work in progress: files of atomic_path, folders of atomic_directory
OLD_PREFIX = ".old-"  # a folder's previous version, removed once its replacement is in place


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
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=directory)
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
    tmp = begin_directory(final_dir)
    try:
        yield tmp
        commit_directory(tmp, final_dir)
    finally:
        abandon_directory(tmp)


def begin_directory(final_dir: str) -> str:
    """atomic_directory in steps, for writers that must not leave a block on error: the temporary folder."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX + os.path.basename(final_dir) + "-", dir=parent)
    honour_umask(tmp, directory=True)
    return tmp


def commit_directory(tmp: str, final_dir: str) -> None:
    """Replace final_dir by the complete folder tmp (the previous version is removed last)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    old = None
    if os.path.isdir(final_dir) and not os.path.islink(final_dir) and exchange_paths(tmp, final_dir):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
        return
    if os.path.exists(final_dir):
        old = tempfile.mkdtemp(prefix=OLD_PREFIX + os.path.basename(final_dir) + "-", dir=parent)
        os.rmdir(old)
        os.replace(final_dir, old)
    try:
        os.replace(tmp, final_dir)
    except OSError:
        if old:
            os.replace(old, final_dir)  # the previous version goes back under its name
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(first: str, second: str) -> bool:
    """Swap two existing paths atomically (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), ctypes.c_uint(_RENAME_EXCHANGE))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


def abandon_directory(tmp: str | None) -> None:
    """Remove a temporary folder that was not committed (no-op once it was)."""
    if tmp and os.path.exists(tmp):
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def restore_interrupted_replacements(directory: str) -> list[str]:
    """Put back every folder that a kill caught between atomic_directory's two renames; returns their names.

    A `.old-<name>-*` folder whose <name> is missing is <name>'s complete previous version.
    """
    restored = []
    for name in _listing(directory):
        path = os.path.join(directory, name)
        original = name[len(OLD_PREFIX):].rpartition("-")[0] if name.startswith(OLD_PREFIX) else ""
        if original and os.path.isdir(path) and not os.path.lexists(os.path.join(directory, original)):
            os.replace(path, os.path.join(directory, original))
            restored.append(original)
    return restored


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove what killed atomic writes left in directory (not below it); returns the names removed.

    Only our two prefixes are touched; run restore_interrupted_replacements first, so that a
    `.old-*` folder that is the only complete copy of something is put back, not removed.
    """
    removed = []
    for name in _listing(directory):
        if not name.startswith((TMP_PREFIX, OLD_PREFIX)):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(name)
    return removed


def _listing(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _own_leftover(name: str, prefix: str, target: str) -> bool:
    """name is `<prefix><target>-<suffix>` with a suffix of mkdtemp's alphabet (no '-', so `out-2`'s are not `out`'s)."""
    head = prefix + target + "-"
    return name.startswith(head) and len(name) > len(head) and "-" not in name[len(head):]


def recover_replacement(final_dir: str) -> list[str]:
    """Clean what a killed atomic_directory(final_dir) left beside it; returns what it did, for the log.

    A `.old-<name>-*` whose <name> is missing is put back (a kill between the two renames), every other
    `.tmp-<name>-*` / `.old-<name>-*` is removed. Call it only while owning final_dir (core.folder_lock):
    another writer's temporary looks the same.
    """
    parent, name = os.path.split(os.path.abspath(final_dir))
    done = []
    for entry in _listing(parent):
        path = os.path.join(parent, entry)
        if _own_leftover(entry, OLD_PREFIX, name) and not os.path.lexists(final_dir) and os.path.isdir(path):
            os.replace(path, final_dir)
            done.append(f"put back {name} from {entry}")
        elif _own_leftover(entry, TMP_PREFIX, name) or _own_leftover(entry, OLD_PREFIX, name):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            done.append(f"removed {entry}")
    return done
