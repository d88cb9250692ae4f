"""One process at a time writes an output folder: an exclusive lock the kernel releases when its holder dies.

train, merge, export and eval each own their --output_dir while they run. Two processes on one
folder would otherwise both succeed and leave a mix (checkpoints of two runs, one result silently
gone). The lock is a POSIX record lock (fcntl.lockf) on a small file beside the folder,
`<parent>/.<name>.lock`:
  * beside, not inside: merge and export replace the folder by renames and --overwrite_output_dir
    moves it aside; a lock inside would travel with the old folder while the new one stood open;
  * a POSIX lock belongs to the process, so forked DataLoader workers never inherit it, and the
    kernel drops it the moment the holder exits, however it ends (kill -9 included): a lock left by
    a dead process is simply taken over (its stale holder line is logged and replaced);
  * the file holds one line naming the holder (command, pid, host, start time), which is what a
    refused process prints; it is removed when the holder releases the lock (and the next holder
    checks that the file it locked is still the one on disk, so a removal never lets two in).
In a distributed job rank 0 takes the lock and every rank learns the outcome (owned_folder).
"""
import errno
import fcntl
import logging
import os
import socket
import time
from contextlib import contextmanager

from llava_ln.core.distributed import broadcast_object
from llava_ln.core.errors import LlavaLnError

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_HELD: dict = {}  # lock path -> FolderLock held by this process (POSIX locks never conflict within one process)


class FolderInUse(LlavaLnError):
    """Another process (or another command in this one) owns the folder."""


def lock_path_for(folder: str) -> str:
    """`<parent>/.<name>.lock` for a folder (symlinks in the parent resolved, so two spellings share a lock)."""
    absolute = os.path.abspath(folder.rstrip(os.sep) or os.sep)
    parent, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(parent), f".{name or 'root'}{LOCK_SUFFIX}")


def _holder_line(command: str) -> str:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"llava-ln {command}, pid {os.getpid()} on host {socket.gethostname()}, since {started}"


class FolderLock:
    """acquire() / release(), or `with FolderLock(folder, "train"):`."""

    def __init__(self, folder: str, command: str):
        self.folder = folder
        self.command = command
        self.path = lock_path_for(folder)
        self._fd = None

    def acquire(self) -> "FolderLock":
        held = _HELD.get(self.path)
        if held is not None:
            raise FolderInUse(f"--output_dir {self.folder} is in use by llava-ln {held.command} in this same process "
                              f"(pid {os.getpid()}); wait for it to finish or choose another folder")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(10):  # retried only when the file was replaced between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_line(fd)
                os.close(fd)
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise LlavaLnError(f"--output_dir {self.folder}: cannot lock {self.path} ({err.strerror})") from None
                raise FolderInUse(f"--output_dir {self.folder} is in use by {holder or 'another llava-ln process'} "
                                  f"(lock {self.path}); wait for it to finish, or choose another folder") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise LlavaLnError(f"--output_dir {self.folder}: its lock file {self.path} keeps being replaced")
        stale = _read_line(fd)
        if stale:
            logger.warning("took over the lock of %s from %s, which ended without releasing it", self.folder, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_line(self.command) + "\n").encode(), 0)
        self._fd = fd
        _HELD[self.path] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self.path, None)
        try:
            if _same_file(self._fd, self.path):
                os.remove(self.path)  # while still locked: whoever opened it before will see it is gone
        except OSError:
            pass
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False


def _read_line(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, IndexError):
        return ""


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def owned_folder(context, folder: str, command: str):
    """Hold folder's lock on rank 0 for the block; every rank raises the same error when it is taken."""
    lock = FolderLock(folder, command)
    outcome = None
    if context is None or context.is_main:
        try:
            lock.acquire()
        except LlavaLnError as err:
            outcome = (type(err) is FolderInUse, str(err))
    if context is not None:
        outcome = broadcast_object(context, outcome)
    if outcome is not None:
        raise (FolderInUse if outcome[0] else LlavaLnError)(outcome[1])
    try:
        yield lock
    finally:
        lock.release()
