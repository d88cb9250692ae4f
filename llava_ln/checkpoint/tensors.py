"""Safetensors I/O for named tensor dicts, sharded when large, with errors naming the file."""
import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llava_ln.core.atomic import atomic_path, write_json_atomic
from llava_ln.core.errors import LlavaLnError

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def save_tensors(directory: str, stem: str, tensors: dict, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
    """Write tensors as <stem>.safetensors, or <stem>-0000k-of-0000n.safetensors plus an index.

    Returns the file names written (relative to directory). Tensors are made contiguous
    CPU copies; shared storage (tied weights) must already be deduplicated by the caller.
    """
    os.makedirs(directory, exist_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    shards, current, size = [], {}, 0
    for name in sorted(cpu):
        nbytes = cpu[name].numel() * cpu[name].element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = cpu[name]
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        names = [f"{stem}.safetensors"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file_name, shard in zip(names, shards):
        with atomic_path(os.path.join(directory, file_name), ".safetensors") as tmp:
            save_file(shard, tmp, metadata={"format": "pt"})
    if len(shards) > 1:
        weight_map = {name: file_name for file_name, shard in zip(names, shards) for name in shard}
        write_json_atomic(os.path.join(directory, f"{stem}.safetensors.index.json"), {"weight_map": weight_map})
        names.append(f"{stem}.safetensors.index.json")
    return names


def tensor_files(directory: str, stem: str) -> list[str]:
    """Paths of the safetensors files of <stem> in directory (single file or sharded)."""
    single = os.path.join(directory, f"{stem}.safetensors")
    if os.path.exists(single):
        return [single]
    index = os.path.join(directory, f"{stem}.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        return [os.path.join(directory, f) for f in sorted(set(weight_map.values()))]
    return []


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    """Load one safetensors file, or every shard of a <stem> in a folder (path = folder/stem)."""
    files = [path] if path.endswith(".safetensors") else tensor_files(os.path.dirname(path), os.path.basename(path))
    if not files:
        raise LlavaLnError(f"no safetensors checkpoint found at {path}")
    tensors = {}
    for file_path in files:
        if not os.path.exists(file_path):
            raise LlavaLnError(f"checkpoint file {file_path} does not exist")
        try:
            tensors.update(load_file(file_path))
        except (SafetensorError, OSError) as err:
            raise LlavaLnError(f"checkpoint file {file_path} is not a readable safetensors file ({err})") from None
    return tensors
