"""The output folder of `merge` and `export`: owned while written, and left complete or absent.

Each writes its folder into a temporary sibling (`.tmp-<name>-*`) that replaces --output_dir only
when complete (core.atomic). owned_output holds the folder's lock (core.folder_lock) for the whole
command, so a second merge or export into the same folder stops with one line naming the holder,
and, once the lock is held, cleans what a killed earlier run left beside it: a previous version
that a kill caught between the two renames of a replacement is put back, every other leftover of
this folder (full-size copies) is removed. Leftovers of other folders are never touched.
"""
import logging
from contextlib import contextmanager

from llava_ln.core.atomic import recover_replacement
from llava_ln.core.folder_lock import FolderLock
from llava_ln.export.merge import check_output_dir

logger = logging.getLogger(__name__)


@contextmanager
def owned_output(output_dir: str, command: str, checkpoint: str, overrides=None, overwrite: bool = False):
    """Hold output_dir's lock for the block, after cleaning what a killed run left beside it.

    The folder is checked first (check_output_dir: not an input, not a file, empty unless overwrite), so
    nothing beside an input is ever cleaned.
    """
    check_output_dir(output_dir, overwrite, checkpoint, overrides)
    with FolderLock(output_dir, command):
        for done in recover_replacement(output_dir):
            logger.warning("%s: %s (left by an interrupted run)", output_dir, done)
        yield
