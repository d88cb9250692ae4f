"""Which samples turned out unusable when read, shared by the main process and its DataLoader workers.

Some problems only show when a sample is read: a corrupt image, or a conversation whose
supervised tokens all lie beyond --model_max_length. Such an index is flagged in a
shared-memory array (inherited by forked or spawned workers), so each one is logged once,
never re-read in later epochs, and counted by the main process at the end.
"""
import multiprocessing

import numpy as np

TRUNCATED = 1
BAD_RECORD = 2
REASONS = {TRUNCATED: "truncated", BAD_RECORD: "bad_record"}


class SkipSample(Exception):
    """Raised while building a sample that must be skipped (and replaced) rather than trained on."""

    def __init__(self, reason: int, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class SkipLedger:
    def __init__(self, size: int):
        # Races between workers are harmless: they would write the same flag for the same index.
        self._flags = multiprocessing.RawArray("b", max(size, 1))

    def reason(self, index: int) -> int:
        return self._flags[index]

    def mark(self, index: int, reason: int) -> bool:
        """Flag index; True the first time (so the caller logs it once)."""
        if self._flags[index]:
            return False
        self._flags[index] = reason
        return True

    def counts(self) -> dict:
        flags = np.frombuffer(self._flags, dtype=np.int8)
        return {name: int((flags == code).sum()) for code, name in REASONS.items()}
