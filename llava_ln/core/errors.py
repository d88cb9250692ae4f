"""User-facing errors: the CLI prints them as one line and exits with status 2, no traceback."""


class LlavaLnError(Exception):
    """A problem with the user's input (a flag, a file, a record, a checkpoint) that they can fix.

    The message must name the offending thing (file, record id, tensor, flag) so the user
    can act on it without reading a traceback.
    """

    exit_code = 2
