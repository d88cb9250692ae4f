"""User-facing errors: every command prints them as one line and exits with status 2, no traceback."""
import sys


class LlavaLnError(Exception):
    """A problem with the user's input (a flag, a file, a record, a checkpoint) that they can fix.

    The message must name the offending thing (file, record id, tensor, flag) so the user
    can act on it without reading a traceback.
    """

    exit_code = 2


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


def run_command(main_fn, argv) -> int:
    """Run a command's main, turning LlavaLnError into a one-line message and exit code 2."""
    try:
        code = main_fn(argv)
    except LlavaLnError as err:
        print(f"llava-ln: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("llava-ln: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
