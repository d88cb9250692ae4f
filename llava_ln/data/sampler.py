"""--group_by_modality_length: batches that hold only image or only text-only samples, of similar length.

Image and text-only samples are shuffled separately; each modality is cut into megabatches
of world_size * batch_size indices, sorted by length inside, and split into per-device
batches, so every run of `batch_size` consecutive indices is modality-pure and the devices
of one step get similar lengths. Megabatches of both modalities are then shuffled together.
A modality whose size is not a multiple of batch_size is topped up with a few of its own
samples (at most batch_size - 1 repeats per epoch), since a mixed leftover batch would break
purity. The order depends only on (seed, epoch), so a resumed run can skip to its position.
"""
import numpy as np
from torch.utils.data import Sampler

from llava_ln.core.errors import LlavaLnError


class ModalityLengthGroupedSampler(Sampler):
    def __init__(self, lengths, has_image, batch_size: int, world_size: int = 1, seed: int = 0):
        if batch_size < 1 or world_size < 1:
            raise LlavaLnError(f"batch size ({batch_size}) and world size ({world_size}) must be positive")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.has_image = np.asarray(has_image, dtype=bool)
        if self.lengths.shape != self.has_image.shape:
            raise LlavaLnError("lengths and has_image must describe the same samples")
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _modalities(self):
        return [np.flatnonzero(self.has_image), np.flatnonzero(~self.has_image)]

    def __len__(self) -> int:
        return sum(-(-len(group) // self.batch_size) * self.batch_size for group in self._modalities())

    def _megabatches(self, indices: np.ndarray, rng: np.random.Generator) -> list:
        order = rng.permutation(indices)
        shortfall = -len(order) % self.batch_size
        if shortfall:
            order = np.concatenate([order, np.resize(order, shortfall)])
        step = self.batch_size * self.world_size
        megabatches = []
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            # Longest first, stable: ties keep the shuffled order.
            megabatches.append(chunk[np.argsort(-self.lengths[chunk], kind="stable")])
        return megabatches

    def batches(self):
        """The per-device batches of this epoch, in order (each modality-pure)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        megabatches = [m for group in self._modalities() if len(group) for m in self._megabatches(group, rng)]
        for position in rng.permutation(len(megabatches)):
            chunk = megabatches[position]
            for start in range(0, len(chunk), self.batch_size):
                yield chunk[start:start + self.batch_size].tolist()

    def __iter__(self):
        for batch in self.batches():
            yield from batch
