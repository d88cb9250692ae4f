"""Child processes that never outlive what started them: a process group of their own, ended on every way out.

A tool that starts a child (a training, a launcher and the ranks it starts) runs it in a new session,
so that one signal reaches the launcher and every rank, and never the tool itself. Such a child no
longer gets what is sent to the tool's own group (Ctrl-C in a terminal, a scheduler's SIGTERM), so
the tool passes those on (forward_stop_signals) and ends the child's group on its way out, whichever
way that is: a normal end, an exception, Ctrl-C, SIGTERM or a timeout.

  start_in_group        subprocess.Popen in a new session, recorded as live until its group is ended
  end_group             SIGTERM to the group, a grace period (a training finishes its step and writes
                        a checkpoint), then SIGKILL to whatever is left; also after a normal end
  run_in_group          subprocess.run's counterpart: the group is ended however the wait ends; a
                        timeout then raises subprocess.TimeoutExpired
  forward_stop_signals  while active (main thread only), SIGTERM and SIGINT are sent on to every live
                        child group and become SystemExit(143) / KeyboardInterrupt here, once, so that
                        `finally` blocks run (groups ended, temporary folders removed)
  scratch_folder        a temporary folder removed on every way out (or a kept folder, when asked)
  free_port             a TCP port on 127.0.0.1 that is free now, for a launcher's --master_port

A SIGKILL cannot be caught: what sends one to a tool should end the tool's group with end_group
instead (SIGTERM first, so the tool removes its children and folders within the grace period).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager

GRACE_S = 10.0  # default wait between SIGTERM and SIGKILL
_KILL_WAIT_S = 5.0  # after SIGKILL: the kernel ends a process within moments; this only bounds a stuck wait
_POLL_S = 0.05
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Popen objects of children whose group has not been ended yet. Plain set operations (atomic under the GIL):
# the signal handler reads it in the main thread while worker threads may add or remove.
_live: set = set()
_forwarding = {"depth": 0, "raised": False}


def free_port() -> int:
    """A port free on 127.0.0.1 now, as the kernel picks one (from a random offset of its ephemeral range, so
    launchers started side by side, also from other checkouts on the same machine, rarely meet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_in_group(argv: list, **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen(argv, **popen_kwargs) as the leader of a new session (its pid is its group's id)."""
    process = subprocess.Popen(argv, start_new_session=True, **popen_kwargs)
    _live.add(process)
    return process


def _signal_group(pgid: int, signum: int) -> bool:
    """Send signum to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member that changed its user: still there, nothing more this process can do


def _group_gone(process: subprocess.Popen) -> bool:
    """Whether the leader has been reaped and no other member of its group is left."""
    process.poll()  # reaps the leader once it exited (an unreaped leader still counts as a member)
    return process.returncode is not None and not _signal_group(process.pid, 0)


def _wait_until_gone(process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _group_gone(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def end_group(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End the child's whole group: SIGTERM, up to grace_s for every member to exit, then SIGKILL.

    Also right after the leader ended by itself: a launcher may leave ranks behind. The leader's pid
    stays its group's id while any member lives (Linux does not reuse a pid that is still a group's id),
    so signalling the group after the leader was reaped reaches only what it left."""
    try:
        if not _group_gone(process):
            _signal_group(process.pid, signal.SIGTERM)
            if not _wait_until_gone(process, grace_s):
                _signal_group(process.pid, signal.SIGKILL)
                _wait_until_gone(process, _KILL_WAIT_S)
    finally:
        _live.discard(process)


def _collect_output(process: subprocess.Popen) -> tuple:
    """What a piped child still had to say after its group was ended (bounded: a process outside the group
    could hold the pipe open)."""
    try:
        return process.communicate(timeout=_KILL_WAIT_S)
    except (subprocess.TimeoutExpired, ValueError):
        return None, None


def run_in_group(argv: list, timeout: float | None = None, check: bool = False, capture_output: bool = False,
                 grace_s: float = GRACE_S, **popen_kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(argv, ...) with the child leading a group of its own, and that group ended on every way
    out: after a normal end (what it left behind), on a timeout (then subprocess.TimeoutExpired, with the output
    so far), and on any exception here, Ctrl-C and SIGTERM included (this call forwards both to the child)."""
    if capture_output:
        popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with forward_stop_signals():
        process = start_in_group(argv, **popen_kwargs)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_group(process, grace_s)
            stdout, stderr = _collect_output(process)
            raise subprocess.TimeoutExpired(process.args, timeout, output=stdout, stderr=stderr) from None
        except BaseException:
            end_group(process, grace_s)
            raise
        end_group(process, grace_s)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def _forward(signum, frame):
    for process in list(_live):
        if process.returncode is None:
            _signal_group(process.pid, signum)
    if _forwarding["raised"]:
        return  # already unwinding: a second signal must not cut the clean-up short (SIGKILL still can)
    _forwarding["raised"] = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextmanager
def forward_stop_signals():
    """While active, SIGTERM and SIGINT reach every live child group as well, and raise here once
    (SystemExit(143) or KeyboardInterrupt). On exit, children started meanwhile whose group is still live are
    ended, and the previous handlers come back. Main thread only (elsewhere, and nested, it changes nothing)."""
    if threading.current_thread() is not threading.main_thread() or _forwarding["depth"]:
        yield
        return
    earlier = set(_live)
    previous = {signum: signal.signal(signum, _forward) for signum in _STOP_SIGNALS}
    _forwarding.update(depth=1, raised=False)
    try:
        yield
    finally:
        # A child whose caller never got to end it (a signal between its start and the caller's `try`).
        for process in list(_live - earlier):
            end_group(process)
        for signum, handler in previous.items():
            # None: a handler set outside Python, which Python cannot put back; the default is the nearest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _forwarding.update(depth=0, raised=False)


@contextmanager
def scratch_folder(prefix: str, keep: str | None = None):
    """A new temporary folder, removed on every way out; or `keep` (created if needed), left in place."""
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield keep
        return
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
