"""Writing files and their sha256 at once: the safetensors format streamed tensor by tensor, and small files.

A checkpoint's manifest records the sha256 of every file it covers (checkpoint.integrity). Hashing
the bytes on their way to the file costs no second read of a 13 GB file: write_safetensors lays out
the format itself (8-byte little-endian header length, the JSON header padded with spaces to a
multiple of 8, then every tensor's raw bytes back to back, widest dtype first so each tensor stays
aligned) and feeds each chunk to the file and the hash together. The files are read back by the
safetensors library like any other.
"""
import hashlib
import json

import torch

from llava_ln.core.atomic import atomic_path
from llava_ln.core.errors import LlavaLnError

# torch dtype -> safetensors dtype code (the format's own names)
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}
_WRITE_CHUNK = 64 * 2**20


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> str:
    """Write tensors to path in the safetensors format; returns the sha256 of the bytes written."""
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header, offset = {}, 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise LlavaLnError(f"tensor {name}: dtype {tensor.dtype} cannot be stored in safetensors")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for chunk in (len(encoded).to_bytes(8, "little"), encoded):
            handle.write(chunk)
            digest.update(chunk)
        for name in order:
            tensor = tensors[name].detach().to("cpu").contiguous()
            if tensor.numel() == 0:
                continue
            data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            for start in range(0, len(data), _WRITE_CHUNK):
                chunk = data[start:start + _WRITE_CHUNK]
                handle.write(chunk)
                digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path: str, payload: bytes) -> str:
    """Write payload to path atomically; returns its sha256."""
    with atomic_path(path, ".tmp") as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
    return hashlib.sha256(payload).hexdigest()
