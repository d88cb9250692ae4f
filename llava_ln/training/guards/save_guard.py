"""Saves that fail as one: a full disk on the writing rank, or a non-finite tensor, stops every rank with one line.

Rank 0 writes while every rank gathers tensors collectively, one parameter at a time. So rank 0
must not leave the sequence of collectives when a write fails (the other ranks would wait in the
next gather forever): RankZeroWrites runs rank 0's writes, keeps the first failure, skips the writes
after it, and at the end broadcasts it, so that every rank raises the same one-line error. Failures:
a write error (an OSError such as ENOSPC, EDQUOT, EIO, or the I/O error safetensors wraps its own in:
LlavaLnError) and a gathered tensor that is not finite
(TrainingDiverged: nothing non-finite is ever written, whatever let it into the weights). The
temporary folder is removed, so a failed checkpoint leaves the previous ones exactly as they were
and no `.tmp-*` behind.
"""
import os

import torch

from llava_ln.checkpoint.tensor_checks import all_finite
from llava_ln.core.atomic import abandon_directory, begin_directory, commit_directory
from llava_ln.core.distributed import broadcast_object
from llava_ln.core.errors import LlavaLnError, write_failure
from llava_ln.training.guards.step_guard import TrainingDiverged


class RankZeroWrites:
    """with RankZeroWrites(context, target, folder, keeps) as writes: ... writes.run(fn, *args) ...

    folder=True: writes.tmp is a temporary folder (rank 0) that replaces `target` when all went well.
    folder=False: the writes go straight to their own atomic files (the final run folder).
    keeps: what stays intact if this save fails, for the message (rank 0).
    """

    def __init__(self, context, target: str, folder: bool, keeps: str = ""):
        self.context = context
        self.target = target
        self.folder = folder
        self.keeps = keeps
        self.tmp = None
        self.failure = None  # (error class name, message) of rank 0's first failure

    def __enter__(self):
        if self.folder:
            self.tmp = self.run(begin_directory, self.target)
        return self

    @property
    def writing(self) -> bool:
        """Rank 0 and no failure yet."""
        return self.context.is_main and self.failure is None

    def run(self, function, *args, **kwargs):
        if not self.writing:
            return None
        try:
            return function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - write errors only (OSError, safetensors' I/O error)
            why = write_failure(err)
            if why is None:
                raise
            self.failure = ("LlavaLnError", f"could not write {self.target}: {why}; nothing was lost: {self.keeps}, "
                            "and the partial files were removed; free space and resume with "
                            "--resume_from_checkpoint latest")
            return None

    def check_finite(self, name: str, tensor: torch.Tensor) -> None:
        if self.writing and not all_finite(tensor):
            self.failure = ("TrainingDiverged", f"refusing to write {self.target}: tensor {name} holds non-finite "
                            f"values (the run diverged); nothing was written: {self.keeps}; lower the learning "
                            "rate(s)")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.folder and self.tmp:
            self.run(commit_directory, self.tmp, self.target)
        if self.context.is_main:
            abandon_directory(self.tmp)
        if exc_type is not None:
            return False
        failure = broadcast_object(self.context, self.failure)  # also the barrier that ends the save
        if failure is not None:
            kind, message = failure
            raise (TrainingDiverged if kind == "TrainingDiverged" else LlavaLnError)(message)
        return False


def kept_note(checkpoints: list, target: str) -> str:
    """Which checkpoint a failed save leaves intact, for the message."""
    earlier = [path for _, path in checkpoints if os.path.abspath(path) != os.path.abspath(target)]
    return f"{earlier[-1]} is intact" if earlier else "there was no earlier checkpoint"
