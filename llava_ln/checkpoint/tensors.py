"""Named tensors on disk: safetensors only, sharded when large, every error naming the file and tensor.

One writer serves every file set the project writes (trained tensors, resume state, merged
non-native tensors): ShardedTensorWriter takes tensors one at a time, so rank 0 never holds a
7B model's Adam state at once, and names its files like Hugging Face does:
`<stem>.safetensors` when one shard is enough, else `<stem>-0000k-of-0000n.safetensors` plus
`<stem>.safetensors.index.json` (written last, so an index never points at a missing shard).
Every file is written atomically, and its sha256 is computed from the bytes as they are written
(write_safetensors streams each tensor's bytes to the file and the hash at once), so recording a
13 GB file's checksum costs no second read. Readers open shards lazily and check names and shapes
before anything is copied into a model.

Every floating tensor read is checked finite, and a tensor copied into a parameter must be of its
kind (checkpoint.tensor_checks). PyTorch pickle files (`.bin`, `.pt`) are never unpickled: load_torch_tensors_safely reads one
with torch.load(weights_only=True), which builds tensors and plain containers only and refuses
any other class or callable a file names, and accepts the result only as a dict of named tensors.
"""
import json
import math
import os
import struct

import torch
from safetensors import SafetensorError, safe_open

from llava_ln.checkpoint.hashed_write import SAFETENSORS_DTYPES, write_bytes_atomic, write_safetensors
from llava_ln.checkpoint.partitions import full_shape, set_full_value
from llava_ln.checkpoint.tensor_checks import check_finite, check_kind
from llava_ln.core.atomic import TMP_PREFIX, atomic_path
from llava_ln.core.bounded_json import METADATA_MAX_BYTES, loads, read_json_object
from llava_ln.core.errors import LlavaLnError, short_reason
from llava_ln.model.parts import unwrap

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def _index_name(stem: str) -> str:
    return f"{stem}.safetensors.index.json"


class ShardedTensorWriter:
    """add(name, tensor) ... close() -> {file name (relative to directory): sha256} of the files written."""

    def __init__(self, directory: str, stem: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        os.makedirs(directory, exist_ok=True)
        self.directory, self.stem, self.max_shard_bytes = directory, stem, max_shard_bytes
        self.pending, self.pending_bytes = {}, 0
        self.shards = []  # [(temporary file name, [tensor names])]
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cpu").contiguous()
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self.pending[name] = tensor
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        # Shards get their final names only at close(), when their count is known; until then they carry the
        # temporary prefix, so a kill in between leaves nothing that the next run's cleanup would keep.
        name = f"{TMP_PREFIX}{self.stem}-part{len(self.shards) + 1:05d}.safetensors"
        with atomic_path(os.path.join(self.directory, name), ".safetensors") as tmp:
            digest = write_safetensors(tmp, self.pending, metadata={"format": "pt"})
        self.shards.append((name, sorted(self.pending), digest))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> dict[str, str]:
        if self.pending or not self.shards:
            self._flush()
        count = len(self.shards)
        names = [f"{self.stem}.safetensors"] if count == 1 else [
            f"{self.stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        written = {}
        for (part, _, digest), final in zip(self.shards, names):
            os.replace(os.path.join(self.directory, part), os.path.join(self.directory, final))
            written[final] = digest
        if count > 1:
            weight_map = {tensor: final for (_, tensors, _), final in zip(self.shards, names) for tensor in tensors}
            # transformers' index layout, so a set named "model" is also a from_pretrained checkpoint.
            payload = (json.dumps({"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, indent=2,
                                  sort_keys=True) + "\n").encode("utf-8")
            written[_index_name(self.stem)] = write_bytes_atomic(os.path.join(self.directory, _index_name(self.stem)),
                                                                 payload)
        return written


def save_tensors(directory: str, stem: str, tensors: dict, *,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> dict[str, str]:
    """Write a dict of tensors (tied weights already deduplicated) as <stem>; returns {file name: sha256}."""
    writer = ShardedTensorWriter(directory, stem, max_shard_bytes)
    for name in sorted(tensors):
        writer.add(name, tensors[name])
    return writer.close()


def tensor_files(directory: str, stem: str) -> list[str]:
    """Paths of the safetensors files of <stem> in directory (single file or sharded), [] when absent."""
    single = os.path.join(directory, f"{stem}.safetensors")
    if os.path.exists(single):
        return [single]
    index = os.path.join(directory, _index_name(stem))
    if not os.path.exists(index):
        return []
    try:
        weight_map = read_json_object(index)["weight_map"]
    except (KeyError, TypeError) as err:
        raise LlavaLnError(f"{index} is not a valid shard index ({err})") from None
    names = sorted(set(weight_map.values()))
    for name in names:
        # A shard index is data from disk: it may only name files beside it.
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            raise LlavaLnError(f"{index} names {name!r}, which is not a file in {directory}")
    return [os.path.join(directory, name) for name in names]


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def is_pickle_name(path: str) -> bool:
    """Whether a file name says PyTorch pickle (torch.save) rather than safetensors."""
    return path.lower().endswith(PICKLE_SUFFIXES)


def tensor_file_names(directory: str, stem: str) -> list[str]:
    """Names of <stem>'s files in directory as a reader opens them: the shards, then the index when sharded."""
    names = [os.path.basename(f) for f in tensor_files(directory, stem)]
    return names if names in ([], [f"{stem}.safetensors"]) else names + [_index_name(stem)]


class TensorReader:
    """Lazy, name-addressed access to <stem>'s tensors (all shards); errors name the file and tensor."""

    def __init__(self, path: str):
        """path: one .safetensors file, or directory/stem for a (possibly sharded) set."""
        self.path = path
        if is_pickle_name(path) and os.path.isfile(path):
            raise LlavaLnError(f"{path} is a PyTorch pickle file; llava-ln reads checkpoints as safetensors only")
        files = [path] if path.endswith(".safetensors") else tensor_files(os.path.dirname(path),
                                                                          os.path.basename(path))
        if not files:
            raise LlavaLnError(f"no safetensors checkpoint found at {path}")
        self.files = files
        self.location = {}
        self._handles = {}
        self._layouts = {}
        for file in files:
            for name in self._handle(file).keys():
                self.location[name] = file

    def _handle(self, file: str):
        if file not in self._handles:
            if not os.path.exists(file):
                raise LlavaLnError(f"checkpoint file {file} does not exist")
            try:
                self._handles[file] = safe_open(file, framework="pt", device="cpu")
            except (SafetensorError, OSError) as err:
                raise LlavaLnError(f"checkpoint file {file} is not a readable safetensors file ({err})") from None
        return self._handles[file]

    def names(self) -> set[str]:
        return set(self.location)

    def shape(self, name: str) -> tuple:
        return tuple(self._handle(self._file_of(name)).get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        """The stored dtype as torch names it ("float32", "bfloat16", ...)."""
        code = self._handle(self._file_of(name)).get_slice(name).get_dtype()
        return {v: str(k).replace("torch.", "") for k, v in SAFETENSORS_DTYPES.items()}.get(code, code)

    def shapes(self) -> dict:
        """name -> (shape, file) for every tensor, from the headers alone."""
        return {name: (self.shape(name), file) for name, file in self.location.items()}

    def get(self, name: str) -> torch.Tensor:
        file = self._file_of(name)
        try:
            tensor = self._handle(file).get_tensor(name)
        except (SafetensorError, OSError) as err:
            raise LlavaLnError(f"checkpoint file {file}: tensor {name} cannot be read ({err})") from None
        return check_finite(tensor, name, f"checkpoint file {file}")

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor (its first dimension), read with plain file reads of only those bytes.

        Not through safetensors' memory map: pages of a mapped file count in the process's resident
        memory for as long as the map is open, which is what the partitioned ZeRO-3 load must avoid.
        """
        file = self._file_of(name)
        layout = self._layouts.get(file) or self._layouts.setdefault(file, _safetensors_layout(file))
        entry = layout["tensors"][name]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise LlavaLnError(f"checkpoint file {file}: tensor {name} has dtype {entry['dtype']}, which cannot be "
                               "read row by row")
        shape = entry["shape"]
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        stop = min(stop, shape[0]) if shape else 1
        begin, size = layout["data_start"] + entry["data_offsets"][0] + start * row_bytes, (stop - start) * row_bytes
        buffer = bytearray(size)
        with open(file, "rb") as handle:
            handle.seek(begin)
            if handle.readinto(buffer) != size:
                raise LlavaLnError(f"checkpoint file {file}: tensor {name} is truncated")
        values = torch.frombuffer(buffer, dtype=dtype) if size else torch.empty(0, dtype=dtype)
        check_finite(values, f"{name} (rows {start}..{stop})", f"checkpoint file {file}")
        return values.reshape(stop - start, *shape[1:]) if shape else values.reshape(())

    def close(self) -> None:
        """Drop the open file handles (and their memory maps)."""
        self._handles.clear()

    def all(self) -> dict:
        return {name: self.get(name) for name in sorted(self.location)}

    def _file_of(self, name: str) -> str:
        if name not in self.location:
            raise LlavaLnError(f"{self.path}: holds no tensor {name}")
        return self.location[name]


_SAFETENSORS_DTYPES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}  # header code -> dtype


def _safetensors_layout(file: str) -> dict:
    """The header of a safetensors file (https://github.com/huggingface/safetensors: an 8-byte little-endian
    length, then JSON: per tensor dtype, shape and byte offsets relative to the end of the header)."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > METADATA_MAX_BYTES:
                raise ValueError(f"a header of {length} bytes")
            header = loads(handle.read(length), f"the header of {file}")
    except (OSError, ValueError, struct.error) as err:
        raise LlavaLnError(f"checkpoint file {file} is not a readable safetensors file ({err})") from None
    header.pop("__metadata__", None)
    return {"data_start": 8 + length, "tensors": header}


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file, or of every shard of a <stem> (path = folder/stem)."""
    return TensorReader(path).all()


def load_torch_tensors_safely(path: str) -> dict[str, torch.Tensor]:
    """name -> tensor from a PyTorch pickle file (LLaVA's mm_projector.bin, pytorch_model.bin), never unpickled.

    torch.load(weights_only=True) rebuilds tensors and plain containers only; a file that names any
    other class or callable (code to run) fails before anything of it is built. The content must
    be a dict of named tensors (LLaVA wraps none in `state_dict`; a `{"state_dict": {...}}` wrapper
    is accepted). Every refusal is one line naming the file.
    """
    if not os.path.isfile(path):
        raise LlavaLnError(f"checkpoint file {path} does not exist")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # noqa: BLE001 - whatever the reason, nothing of this file is used
        raise LlavaLnError(f"{path}: not a tensor-only PyTorch file; refusing to unpickle it ({short_reason(err)})"
                           ) from None
    if isinstance(state, dict) and set(state) == {"state_dict"} and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LlavaLnError(f"{path}: holds a {type(state).__name__}, not a mapping of names to tensors")
    if not state:
        raise LlavaLnError(f"{path}: holds no tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise LlavaLnError(f"{path}: entry {name!r} is a {type(value).__name__}, not a named tensor")
        check_finite(value, name, path)
    # Copies, so no tensor keeps the memory-mapped file open.
    return {name: value.detach().clone() for name, value in state.items()}


def stored_shapes(files: list) -> dict:
    """name -> (shape, file) for every tensor in the safetensors files (headers only)."""
    shapes = {}
    for file in files:
        shapes.update(TensorReader(file).shapes())
    return shapes


def assign_tensors(model, tensors: dict, source: str) -> None:
    """Overwrite named parameters of model (names relative to the Llava model) with tensors, in place.

    Every tensor must exist in the model with the same shape and kind (floating for a floating parameter;
    never cast from integers); otherwise the error names the first
    offending tensor and the file it came from, and nothing has been modified. Parameters partitioned
    by ZeRO-3 get this rank's slice (every rank passes the same full tensors).
    """
    params = dict(unwrap(model).named_parameters())
    for name in sorted(tensors):
        if name not in params:
            raise LlavaLnError(f"{source}: tensor {name} does not exist in this model (checkpoint from another model?)")
        if full_shape(params[name]) != tuple(tensors[name].shape):
            raise LlavaLnError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)} but the model expects "
                f"{full_shape(params[name])} (checkpoint from another model?)"
            )
        check_kind(tensors[name], params[name].dtype, name, source)
    with torch.no_grad():
        for name, value in tensors.items():
            set_full_value(params[name], value, name)
