"""core.processes: a child's whole group ends however the wait for it ends, and stop signals reach it.

The children are small shell jobs (a shell plus a `sleep` in the background, which a plain kill of the
shell would leave behind), marked so that any survivor is found wherever it is.
"""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from process_helpers import alive_with_mark, marked_env

from llava_ln.core.processes import end_group, forward_stop_signals, free_port, run_in_group, start_in_group

# A shell that writes which stop signal it got (if any), with a background sleep that outlives it unless its
# group is ended: a shell without job control starts background jobs with SIGINT ignored.
JOB = "trap 'echo INT > {0}; exit 130' INT; trap 'echo TERM > {0}; exit 143' TERM; sleep 60 & wait"


def _job(tmp_path) -> tuple[list, str]:
    said = str(tmp_path / "signal")
    return ["bash", "-c", JOB.format(said)], said


def _eventually_none_alive(mark: str, seconds: float = 10.0) -> list:
    deadline = time.monotonic() + seconds
    while alive_with_mark(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive_with_mark(mark)


def _read(path: str) -> str:
    return open(path, encoding="utf-8").read().strip() if os.path.exists(path) else ""


def test_a_timeout_ends_the_whole_group(tmp_path):
    argv, said = _job(tmp_path)
    mark, env = marked_env()
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_group(argv, timeout=1, env=env, grace_s=5)
    assert time.monotonic() - started < 5  # SIGTERM ended it: no wait for the grace period
    assert _read(said) == "TERM" and alive_with_mark(mark) == []


def test_what_a_child_leaves_behind_is_ended_after_its_normal_end(tmp_path):
    mark, env = marked_env()
    done = run_in_group(["bash", "-c", "sleep 60 & echo started"], capture_output=False, env=env,
                        stdout=subprocess.DEVNULL, grace_s=5)
    assert done.returncode == 0 and alive_with_mark(mark) == []


def test_ctrl_c_reaches_the_child_and_its_group_is_ended(tmp_path):
    argv, said = _job(tmp_path)
    mark, env = marked_env()
    # Ctrl-C in a terminal: SIGINT to this process only (the child leads a session of its own).
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        run_in_group(argv, env=env, grace_s=5)
    assert _read(said) == "INT"  # forwarded: the child stopped the way it would have in the terminal's group
    assert alive_with_mark(mark) == []  # and the background sleep, which ignores SIGINT, went with the group


def test_sigterm_becomes_an_exit_and_the_previous_handler_comes_back(tmp_path):
    argv, said = _job(tmp_path)
    mark, env = marked_env()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with forward_stop_signals():
            child = start_in_group(argv, env=env)
            time.sleep(0.5)  # the shell installs its traps
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # never reached: the handler raises
    assert stopped.value.code == 143 and child.returncode is not None
    assert _read(said) == "TERM" and _eventually_none_alive(mark) == []  # ended on the way out, though never waited for
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    mark, env = marked_env()
    child = start_in_group(["bash", "-c", "trap '' TERM; sleep 60"], env=env)
    time.sleep(0.5)
    started = time.monotonic()
    end_group(child, grace_s=1)
    assert 1 <= time.monotonic() - started < 5 and alive_with_mark(mark) == []


def test_free_port_binds():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))  # free: binding it succeeds
