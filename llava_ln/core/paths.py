"""Where a path lies relative to a folder: the checks behind "a path read from a file stays inside its
folder" (image paths in records, shard names in indexes) and "an output never overlaps an input".

Two notions, on purpose:
  * lexical (relative_inside): a relative path taken from a file must not climb out of its root with
    `..` or be absolute. Symlinks inside the root are followed: the root belongs to the user, the
    file naming the path does not.
  * resolved (overlap): two folders given on the command line are compared after resolving symlinks,
    so `out -> run` still counts as the run itself. refuse_overlap applies it to a command's output
    and every input it reads (train, merge, export, eval).
"""
import os

from llava_ln.core.errors import LlavaLnError


def relative_inside(relative: str) -> bool:
    """Whether a relative path from a file stays inside the folder it is joined to (no `..` escape, not absolute)."""
    if not relative or os.path.isabs(relative) or "\0" in relative:
        return False
    return not os.path.normpath(relative).split(os.sep)[0] == ".."


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def overlap(path: str, other: str) -> str | None:
    """How path relates to other once symlinks are resolved: "is", "lies inside", "contains", or None."""
    mine, theirs = os.path.realpath(path), os.path.realpath(other)
    if mine == theirs:
        return "is"
    if _within(mine, theirs):
        return "lies inside"
    if _within(theirs, mine):
        return "contains"
    return None


def refuse_overlap(output_dir: str, inputs, command: str, allowed: dict | None = None) -> None:
    """One line when --output_dir overlaps an input: (flag, path) pairs; allowed: flag -> relations it may have
    ("*": for every flag).

    Writing a run, an export or answers into an input (or around it) changes what later runs read: a
    manifest written into the base model's folder breaks every run on that base.
    """
    allowed = allowed or {}
    for flag, path in inputs:
        if not path or not os.path.exists(path):
            continue
        relation = overlap(output_dir, path)
        if relation and relation not in allowed.get(flag, allowed.get("*", ())):
            raise LlavaLnError(f"{command}: --output_dir {output_dir} {relation} {flag} {path}; an output must not "
                               "overlap an input: choose a folder outside it")
