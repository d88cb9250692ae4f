"""Which samples there are and in which batches: the index of every `--data_path` file, and the sampler.

Indexing is the dataset's cheap pre-validation: every record is parsed once (no tokenization, no
image decoding), so a malformed record, a missing image file or an image path that leaves the
image folder stops the run before training starts, with a one-line error naming the file and
record id. With --skip_bad_samples such records are logged once, counted and left out instead.
What remains is packed into a RecordStore and decoded again only when its sample is read.

--group_by_modality_length: batches that hold only image or only text-only samples, of similar
length. Image and text-only samples are shuffled separately; each modality is cut into megabatches
of world_size * batch_size indices, sorted by length inside, and split into per-device batches, so
every run of `batch_size` consecutive indices is modality-pure and the devices of one step get
similar lengths. Megabatches of both modalities are then shuffled together. A modality whose size
is not a multiple of batch_size is topped up with a few of its own samples (at most batch_size - 1
repeats per epoch), since a mixed leftover batch would break purity. The order depends only on
(seed, epoch), so a resumed run can skip to its position.
"""
import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from torch.utils.data import Sampler

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.images import ImageError, resolve_image_path
from llava_ln.data.records import Conversation, RecordError, RecordStore, iter_records, parse_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    path: str
    count: Optional[int] = None  # keep a random subset of this many records


def parse_data_path(spec: str) -> list:
    """`a.json,b.jsonl:20000` -> [DataSource(a.json), DataSource(b.jsonl, 20000)]."""
    sources = []
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part:
            continue
        path, count = part, None
        head, sep, tail = part.rpartition(":")
        if sep and head and tail.lstrip("-").isdigit():
            path, count = head, int(tail)
            if count <= 0:
                raise LlavaLnError(f"--data_path {part!r}: the sample count must be positive")
        sources.append(DataSource(path, count))
    if not sources:
        raise LlavaLnError("--data_path names no file")
    return sources


def describe_record(path: str, position: int, record_id=None) -> str:
    """How errors name a record: its file, its id when it has one, and its position."""
    return f"{path}: record {record_id!r} (#{position})" if record_id is not None else f"{path}: record #{position}"


def resolve_image(root: str, image: str, allow_absolute: bool) -> str:
    """The file an image path of a record names; ImageError when it would leave root."""
    return resolve_image_path(root, image, allow_absolute)


@dataclass
class DatasetIndex:
    store: RecordStore
    source: np.ndarray  # file number of each record
    position: np.ndarray  # record number inside its file
    n_images: np.ndarray
    words: np.ndarray  # whitespace-separated words, a cheap length estimate
    files: tuple
    image_roots: tuple
    rejected: int  # bad records left out while indexing (only with skip_bad_samples)
    absolute_images: bool = True  # absolute image paths allowed (no --image_folder given)

    def __len__(self) -> int:
        return len(self.store)

    def where(self, index: int, record_id=None) -> str:
        return describe_record(self.files[self.source[index]], int(self.position[index]), record_id)

    def conversation(self, index: int) -> Conversation:
        return parse_record(self.store.record(index))  # validated while indexing, so this cannot fail

    def image_paths(self, index: int, conversation: Conversation) -> list:
        root = self.image_roots[self.source[index]]
        return [resolve_image(root, image, self.absolute_images) for image in conversation.images]


def _image_root(source: DataSource, image_folder: Optional[str]) -> str:
    return image_folder if image_folder is not None else os.path.dirname(os.path.abspath(source.path))


def _scan_file(source: DataSource, root: str, skip_bad: bool, absolute_images: bool):
    """Valid records of one file as (raw bytes, position, images, words); bad ones raise or are counted."""
    kept, rejected = [], 0
    for position, (record, text) in enumerate(iter_records(source.path)):
        try:
            conversation = parse_record(record)
            for image in conversation.images:
                try:
                    path = resolve_image(root, image, absolute_images)
                except ImageError as err:
                    raise RecordError(str(err), conversation.id) from None
                if not os.path.isfile(path):
                    raise RecordError(f"image file not found: {path}", conversation.id)
        except RecordError as err:
            message = f"{describe_record(source.path, position, err.record_id)}: {err.problem}"
            if not skip_bad:
                raise LlavaLnError(message) from None
            logger.warning("skipping bad record: %s", message)
            rejected += 1
            continue
        kept.append((text.encode("utf-8"), position, len(conversation.images), conversation.word_count()))
    return kept, rejected


def _subsample(kept: list, source: DataSource, file_number: int, seed: int) -> list:
    if source.count is None:
        return kept
    if source.count > len(kept):
        raise LlavaLnError(f"--data_path {source.path}:{source.count}: the file has only {len(kept)} usable records")
    # Seeded by (seed, file number): the same flags always pick the same records, in file order.
    chosen = np.sort(np.random.default_rng([seed, file_number]).choice(len(kept), source.count, replace=False))
    return [kept[i] for i in chosen]


def build_index(sources: list, image_folder: Optional[str], seed: int, skip_bad: bool) -> DatasetIndex:
    raws, columns, files, roots, rejected = [], [], [], [], 0
    for file_number, source in enumerate(sources):
        root = _image_root(source, image_folder)
        kept, file_rejected = _scan_file(source, root, skip_bad, absolute_images=image_folder is None)
        kept = _subsample(kept, source, file_number, seed)
        logger.info("%s: %d records used%s", source.path, len(kept),
                    f", {file_rejected} bad ones skipped" if file_rejected else "")
        rejected += file_rejected
        files.append(source.path)
        roots.append(root)
        for raw, position, n_images, words in kept:
            raws.append(raw)
            columns.append((file_number, position, n_images, words))
    if not raws:
        raise LlavaLnError(f"--data_path {','.join(files)}: no usable records")
    table = np.array(columns, dtype=np.int64).reshape(-1, 4)
    return DatasetIndex(
        store=RecordStore(raws), source=table[:, 0].astype(np.int32), position=table[:, 1],
        n_images=table[:, 2].astype(np.int32), words=table[:, 3].astype(np.int32),
        files=tuple(files), image_roots=tuple(roots), rejected=rejected, absolute_images=image_folder is None,
    )


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
