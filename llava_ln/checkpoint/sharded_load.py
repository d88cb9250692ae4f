"""Fill a model from safetensors files tensor by tensor, each rank reading only its own ZeRO-3 partition.

ZeRO-3 builds the model empty and partitioned (deepspeed.zero.Init, see training/zero/partitioned_init.py); this
module then reads, for every parameter, only the rows of the stored tensor that cover this rank's
slice of it (safetensors reads slices from disk), so no rank ever holds a whole checkpoint, a whole
shard or a whole model: peak memory is the rank's partitions plus one tensor's rows. The same code
fills plain (unpartitioned) parameters, which is how the tests compare it with transformers' loading.

A *source* says where each tensor of the model is stored:

    sources = {"model.language_model.layers.0.mlp.up_proj.weight": StoredTensor(reader, "model.layers.0.mlp.up_proj.weight"), ...}
    fill_from_sources(model, sources, skip=...)     # values are cast to each parameter's dtype

Any safetensors-backed layout loads this way once it can name, for each parameter of the composed
model, the stored tensor that holds it (`checkpoint.partitioned_start` builds them for every layout a
run can start from; another layout adds a function that returns its sources). `stored_keys` maps a transformers model's parameter names to checkpoint keys with
transformers' own renaming rules (legacy names, CLIP's `vision_model.` prefix, Llava's old layout).
A tensor transformers must transform on load (fused or split experts, permuted rotary weights) has
no row-wise equivalent and is refused with its name.

The one tensor that is not a row copy: when the model's vocabulary grew for `<image>` (StoredTensor
with grows=True), the rows beyond the stored ones are what the loading path gives them, the mean of
the stored rows (matrices; computed exactly as the builder computes it, on the whole stored matrix,
only on the rank whose slice holds those rows) or zeros (a head's bias).
"""
import math
from dataclasses import KW_ONLY, dataclass

import torch

from llava_ln.checkpoint.partitions import full_shape, is_partitioned, write_local
from llava_ln.checkpoint.tensors import TensorReader
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap


@dataclass(frozen=True)
class StoredTensor:
    """One stored tensor: the file set that holds it and its key there."""

    reader: TensorReader
    key: str
    _: KW_ONLY
    grows: bool = False  # the model may have more rows than stored (vocabulary grown for <image>)
    converted: bool = False  # transformers transforms it on load: no row-wise reading possible


def stored_keys(meta_model, reader: TensorReader) -> dict:
    """{model tensor name: StoredTensor} for a transformers model (any device, meta is enough), with the
    keys renamed as transformers' own loading renames them; stored tensors the model lacks are ignored."""
    state = meta_model.state_dict()
    renamings, converters = _weight_mapping(meta_model)
    found = {}
    for key in sorted(reader.names()):
        if renamings is None:
            found.setdefault(key, StoredTensor(reader, key))
            continue
        from transformers.core_model_loading import rename_source_key

        name, converter = rename_source_key(key, renamings, converters, meta_model.base_model_prefix, state)
        if name not in state and key in state:  # as transformers does: only the base-model prefix may differ
            name, converter = rename_source_key(key, [], [], meta_model.base_model_prefix, state)
        if name in state:
            found.setdefault(name, StoredTensor(reader, key, converted=converter is not None))
    return {name: stored for name, stored in found.items() if name in state}


def _weight_mapping(meta_model):
    """transformers' (renamings, converters) for this model, or (None, None) where the API is absent."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming
    except ImportError:  # transformers without weight conversions: stored keys are module names
        return None, None
    mapping = get_model_conversion_mapping(meta_model)
    return ([m for m in mapping if isinstance(m, WeightRenaming)],
            [m for m in mapping if isinstance(m, WeightConverter)])


def _grown_rows(stored: StoredTensor, shape: tuple, dtype: torch.dtype, *, count: int) -> torch.Tensor:
    if len(shape) == 1:
        return torch.zeros(count, dtype=dtype)  # a head bias: the loading path's _init_weights zeroes new entries
    whole = stored.reader.rows(stored.key, 0, stored.reader.shape(stored.key)[0]).to(dtype)
    return whole.mean(dim=0, keepdim=True).expand(count, *shape[1:])


def read_flat_range(stored: StoredTensor, shape: tuple, *, start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
    """Elements [start, end) of the flattened tensor of `shape` that `stored` holds, in dtype."""
    where = f"{stored.reader.path}: tensor {stored.key}"
    if stored.converted:
        raise LlavaLnError(f"{where} is stored in a layout transformers converts on load, which cannot be read "
                           "shard by shard; re-save the checkpoint with save_pretrained, or train with ZeRO-2")
    stored_shape = stored.reader.shape(stored.key)
    fits = stored_shape == shape or (stored.grows and len(shape) >= 1 and stored_shape[1:] == shape[1:]
                                     and stored_shape[0] <= shape[0])
    if not fits:
        raise LlavaLnError(f"{where} has shape {stored_shape} but the model expects {shape} "
                           "(checkpoint from another model?)")
    if not shape:
        return stored.reader.get(stored.key).reshape(-1).to(dtype)
    row = math.prod(shape[1:])
    first, last = start // row, -(-end // row)
    pieces = []
    if first < stored_shape[0]:
        pieces.append(stored.reader.rows(stored.key, first, min(last, stored_shape[0])).to(dtype))
    if last > stored_shape[0]:
        pieces.append(_grown_rows(stored, shape, dtype, count=last - max(first, stored_shape[0])))
    flat = torch.cat([p.reshape(-1) for p in pieces]) if len(pieces) > 1 else pieces[0].reshape(-1)
    offset = start - first * row
    return flat[offset: offset + end - start]


def fill_from_sources(model, sources: dict, skip: frozenset = frozenset()) -> int:
    """Fill every parameter of model (names relative to the Llava model) from sources; returns how many.

    Parameters named in skip keep their values (e.g. a freshly initialised connector); any other
    parameter without a source is an error naming it. Persistent buffers with a source are copied
    whole (ZeRO-3 never partitions buffers).
    """
    llava = unwrap(model)
    filled = 0
    for name, param in llava.named_parameters():
        if name in skip:
            continue
        stored = sources.get(name)
        if stored is None:
            raise LlavaLnError(f"tensor {name} has no stored value in the checkpoint being loaded "
                               "(different model, or an incomplete checkpoint?)")
        shape = full_shape(param)
        target = param.ds_tensor.dtype if is_partitioned(param) else param.dtype
        write_local(param, lambda start, end, s=stored, shp=shape: read_flat_range(s, shp, start=start, end=end,
                                                                                   dtype=target), name)
        filled += 1
    with torch.no_grad():
        for name, buffer in llava.named_buffers():
            stored = sources.get(name)
            if stored is not None and name not in skip:
                buffer.copy_(read_flat_range(stored, tuple(buffer.shape), start=0, end=buffer.numel(),
                                             dtype=buffer.dtype).reshape(buffer.shape))
    for reader in {id(s.reader): s.reader for s in sources.values()}.values():
        reader.close()
    return filled
