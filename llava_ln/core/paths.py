"""Where a path lies relative to a folder: the checks behind "a path read from a file stays inside its
folder" (image paths in records, shard names in indexes) and "an output never overlaps an input".

Two notions, on purpose:
  * lexical (relative_inside): a relative path taken from a file must not climb out of its root with
    `..` or be absolute. Symlinks inside the root are followed: the root belongs to the user, the
    file naming the path does not.
  * resolved (overlap): two folders given on the command line are compared after resolving symlinks,
    so `out -> run` still counts as the run itself.
"""
import os


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
