"""Resume-state file I/O without pickle: streamed safetensors shards and JSON-able RNG states.

Optimizer moments and fp32 masters are written one parameter at a time into shards of
bounded size (so rank 0 never holds a 7B model's Adam state at once) with a name -> file
index, and read back lazily tensor by tensor. RNG states become tensors or JSON lists.
"""
import json
import os
import random

import numpy as np
import torch
from safetensors import safe_open

from llava_ln.checkpoint.tensors import save_tensors
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.errors import LlavaLnError

DEFAULT_SHARD_BYTES = 2 * 2**30


class ShardedTensorWriter:
    """add(name, tensor) ... close(): <stem>-00001.safetensors, ... and <stem>.index.json."""

    def __init__(self, directory: str, stem: str, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.directory, self.stem, self.max_shard_bytes = directory, stem, max_shard_bytes
        self.pending, self.pending_bytes, self.weight_map, self.shard = {}, 0, {}, 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.detach().cpu().contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        self.shard += 1
        stem = f"{self.stem}-{self.shard:05d}"
        save_tensors(self.directory, stem, self.pending, max_shard_bytes=2**62)
        self.weight_map.update({name: f"{stem}.safetensors" for name in self.pending})
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        self._flush()
        write_json_atomic(os.path.join(self.directory, f"{self.stem}.index.json"), {"weight_map": self.weight_map})


class ShardedTensorReader:
    """Lazy access to what ShardedTensorWriter wrote; errors name the file and tensor."""

    def __init__(self, directory: str, stem: str):
        index = os.path.join(directory, f"{stem}.index.json")
        if not os.path.exists(index):
            raise LlavaLnError(f"{directory}: no {stem}.index.json (not a complete resume checkpoint)")
        with open(index, encoding="utf-8") as handle:
            self.weight_map = json.load(handle)["weight_map"]
        self.directory = directory
        self._handles = {}

    def names(self) -> set[str]:
        return set(self.weight_map)

    def shape(self, name: str) -> tuple:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def _handle(self, name: str):
        if name not in self.weight_map:
            raise LlavaLnError(f"{self.directory}: resume state has no tensor {name}")
        file_name = self.weight_map[name]
        if file_name not in self._handles:
            path = os.path.join(self.directory, file_name)
            try:
                self._handles[file_name] = safe_open(path, framework="pt", device="cpu")
            except Exception as err:  # safetensors raises several types; all mean "unreadable"
                raise LlavaLnError(f"{path}: not a readable safetensors file ({err})") from None
        return self._handles[file_name]


def capture_rng() -> dict:
    """This process's RNG states: tensors for torch, JSON lists for python and numpy."""
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])


def split_rng(states: list[dict]) -> tuple[dict, dict]:
    """Per-rank RNG states -> (tensors for safetensors, JSON part)."""
    tensors, json_part = {}, {}
    for rank, state in enumerate(states):
        json_part[str(rank)] = {"python": state["python"], "numpy": state["numpy"]}
        for key in ("torch_cpu", "torch_cuda"):
            if key in state:
                tensors[f"rank{rank}.{key}"] = state[key]
    return tensors, json_part


def join_rng(tensors: dict, json_part: dict, rank: int) -> dict | None:
    if str(rank) not in json_part:
        return None
    state = dict(json_part[str(rank)])
    for key in ("torch_cpu", "torch_cuda"):
        if f"rank{rank}.{key}" in tensors:
            state[key] = tensors[f"rank{rank}.{key}"]
    return state
