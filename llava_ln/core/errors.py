"""User-facing errors: every command prints them as one line and exits with status 2, no traceback.

`--debug` on any command line (removed before the command parses its flags) or LLAVA_LN_DEBUG=1
prints the traceback as well; run_command is the one place that prints errors. Besides LlavaLnError,
two failures from outside are the user's to read in one line: a full disk (exit 2) and, in a
distributed job, a collective that failed because another rank died (exit 1: the dead rank's own
output says why). Anything else is a bug and keeps its traceback.
"""
import errno
import os
import sys
import traceback

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LLAVA_LN_DEBUG"
# A full disk or quota is the user's to fix, wherever a write fails: one line naming the file.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class LlavaLnError(Exception):
    """A problem with the user's input (a flag, a file, a record, a checkpoint) that they can fix.

    The message must name the offending thing (file, record id, tensor, flag) so the user
    can act on it without reading a traceback.
    """

    exit_code = 2
    label = "error"  # what the printed line says before the message


def one_line(err: LlavaLnError) -> str:
    """The user-facing line of an error.

    A LlavaLnError raised inside a DataLoader worker is re-raised by PyTorch in the main
    process with the worker's traceback embedded in its message; only its last line (our
    own message) is meant for the user.
    """
    message = str(err)
    if "Traceback (most recent call last)" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    prefix = f"{LlavaLnError.__module__}.{LlavaLnError.__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


def write_failure(err: BaseException) -> str | None:
    """The one-line reason of a failed write (an OSError, or the Rust I/O error safetensors wraps), else None."""
    if isinstance(err, OSError):
        reason = f"{err.strerror or os.strerror(err.errno)} (errno {err.errno})" if err.errno is not None else str(err)
        return f"{reason} ({err.filename})" if err.filename else reason
    if type(err).__name__ == "SafetensorError" and "I/O error" in str(err):
        return str(err).split("I/O error: ", 1)[-1]
    return None


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL
    return type(err).__name__ == "SafetensorError" and any(f"(os error {code})" in str(err) for code in _DISK_FULL)


def lost_another_rank(err: BaseException) -> bool:
    """A collective failed because another process of the job died (gloo: the connection closed; NCCL/gloo in
    newer torch: torch.distributed's DistError family). That process's own output says why."""
    if type(err).__name__ in ("DistError", "DistBackendError", "DistNetworkError"):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in ("Connection closed by peer",
                                                                               "Connection reset by peer"))


def debug_requested(argv) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def short_reason(err: BaseException, limit: int = 300) -> str:
    """One line saying why err happened, for messages that wrap a library's error.

    Library errors often span lines; the line that names the cause is picked (torch.load's
    weights-only refusal puts it after a generic first line that advises weights_only=False,
    advice never passed on here).
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or line.startswith("WeightsUnpickler error")]
    useful = named or [line for line in lines if not line.startswith("Weights only load failed")]
    reason = (useful or [type(err).__name__])[0].removeprefix("WeightsUnpickler error: ")
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def run_command(main_fn, argv=None) -> int:
    """Run a command's main, turning LlavaLnError into a one-line message and exit code 2.

    argv: the command's arguments; None: this process's own (sys.argv[1:]), for `python -m` entry points."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        code = main_fn(argv)
    except LlavaLnError as err:
        if debug:
            traceback.print_exc()
        _emit(f"llava-ln: {err.label}: {one_line(err)}")
        return err.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        _emit("llava-ln: interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - only a full disk or a lost rank become a line; the rest re-raises
        if is_disk_full(err):
            line, code = f"the disk is full: {write_failure(err)}; free space and run again", 2
        elif lost_another_rank(err):
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            line, code = ("lost contact with another rank of the job (it crashed or was killed; its own output says "
                          f"why): {first}"), 1
        else:
            raise  # a bug: its traceback is the report
        if debug:
            traceback.print_exc()
        _emit(f"llava-ln: error: {line}")
        return code
    return int(code or 0)


def _emit(line: str) -> None:
    # One write per line: the ranks of a job share one stderr pipe, and print() writes the text and its newline
    # separately, so two ranks' lines could run together. A terminal that hung up (SIGHUP) cannot take it: the
    # exit status still says what happened.
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
