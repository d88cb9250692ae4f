"""Finding and killing the processes a test started, wherever they went (Linux /proc).

A test marks the environment of what it starts (every descendant inherits it), so that afterwards
it can list which of them are still alive, whichever process group or session they moved to.
"""
import os
import signal
import uuid

MARK = "LLAVA_LN_TEST_PROCESS_MARK"


def marked_env(**extra) -> tuple[str, dict]:
    """(mark, a copy of os.environ carrying it, plus `extra`)."""
    mark = uuid.uuid4().hex
    return mark, dict(os.environ, **{MARK: mark}, **extra)


def _processes():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def alive_with_mark(mark: str) -> list[int]:
    """Pids of running (not zombie) processes whose environment carries this mark."""
    wanted = f"{MARK}={mark}".encode()
    found = []
    for pid in _processes():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if wanted not in handle.read().split(b"\0"):
                    continue
        except OSError:
            continue  # gone, or not ours
        stat = _stat(pid)
        if stat and stat[0] != "Z":
            found.append(pid)
    return found


def _children() -> dict:
    children = {}
    for pid in _processes():
        stat = _stat(pid)
        if stat:
            children.setdefault(int(stat[1]), []).append(pid)
    return children


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once, as a crash of the machine would end them. Each is stopped
    as it is found, and the search repeats until it finds no new one, so none starts another meanwhile."""
    stopped, found = set(), [pid]
    while found:
        for member in found:
            try:
                os.kill(member, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            stopped.add(member)
        children = _children()
        found = [child for member in stopped for child in children.get(member, []) if child not in stopped]
    for member in stopped:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
