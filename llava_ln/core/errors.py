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
