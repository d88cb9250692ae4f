"""Consolidate a DeepSpeed ZeRO checkpoint (per-rank shards) into full tensors, without unpickling.

llava-ln's trainer writes gathered trainable tensors into every run folder, so this is the
fallback for a checkpoint folder that holds only DeepSpeed's own shards (`latest` plus
`global_step*/ *_model_states.pt, *_optim_states.pt`). Nobody runs zero_to_fp32 by hand:
merge and export consolidate them here.

DeepSpeed's own consolidation utility reads shards with full pickle, which runs whatever code a
file names. This module never does: every shard is read with `torch.load(weights_only=True)`,
and the only non-tensor classes a ZeRO checkpoint holds (the ZeRO stage enum, loss scalers, ZeRO-2
fragment addresses) are mapped to inert local stand-ins, so not even DeepSpeed's code runs while
reading and DeepSpeed need not be installed. A file that names anything else is refused with its
name. The fp32 master partitions are then stitched together following DeepSpeed's layout:

  ZeRO-1/2  per parameter group, each rank holds one contiguous slice of the group's flat buffer;
            the ranks' slices in rank order are the buffer, and the group's parameters follow one
            another in it (plus any recorded alignment padding).
  ZeRO-3    each parameter is split on its own: every rank holds ceil(numel / ranks) elements of it
            at the same offset of its flat buffer; the ranks' pieces in order, cut to numel, are it.

Paths come from the folder alone: `latest` must name a step folder directly inside it.
"""
import math
import os
import re

import torch

from llava_ln.checkpoint.tensor_checks import check_finite
from llava_ln.core.errors import LlavaLnError, short_reason

_STEP_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPTIM_FILE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
_LATEST_MAX_BYTES = 4096


class _ZeroStage(int):
    """Stands in for deepspeed.runtime.zero.config.ZeroStageEnum (an int enum) while reading."""


class _Inert:
    """Stands in for DeepSpeed objects whose attributes are only data (loss scalers, fragment addresses)."""


# The only globals a ZeRO checkpoint may name besides torch's own tensor machinery.
_STAND_INS = [
    (_ZeroStage, "deepspeed.runtime.zero.config.ZeroStageEnum"),
    (_Inert, "deepspeed.runtime.fp16.loss_scaler.LossScaler"),
    (_Inert, "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler"),
    (_Inert, "deepspeed.utils.tensor_fragment.fragment_address"),
]


def _inside(folder: str, name: str, what: str) -> str:
    """folder/name, where name (read from a file) must be one entry directly inside folder."""
    if not _STEP_TAG.match(name) or name in (".", ".."):
        raise LlavaLnError(f"{what} names {name!r}, which is not a folder name inside {folder}")
    path = os.path.join(folder, name)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise LlavaLnError(f"{what} names {name!r}, which leads outside {folder}")
    return path


def zero_checkpoint_dir(folder: str) -> str | None:
    """The global_step* folder of a DeepSpeed checkpoint in folder (via `latest`), or None."""
    latest = os.path.join(folder, "latest")
    if os.path.isfile(latest):
        try:
            with open(latest, "rb") as handle:
                tag = handle.read(_LATEST_MAX_BYTES + 1).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise LlavaLnError(f"{latest} is unreadable ({err})") from None
        step_dir = _inside(folder, tag, latest)
        if not os.path.isdir(step_dir):
            raise LlavaLnError(f"{latest} names {tag!r}, but {step_dir} does not exist")
        return step_dir
    steps = [name for name in os.listdir(folder) if re.match(r"^global_step\d+$", name)] if os.path.isdir(folder) else []
    steps = [name for name in steps if os.path.isdir(os.path.join(folder, name))]
    if not steps:
        return None
    return _inside(folder, max(steps, key=lambda name: int(name[len("global_step"):])), folder)


def read_shard(path: str) -> dict:
    """One DeepSpeed shard as plain data (weights_only; DeepSpeed classes as inert stand-ins)."""
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - whatever the reason, this file is not read any further
        raise LlavaLnError(f"{path}: refusing a DeepSpeed shard that does not load as plain tensors and data "
                           f"with weights_only=True ({short_reason(err)})") from None
    if not isinstance(state, dict):
        raise LlavaLnError(f"{path}: not a DeepSpeed shard (holds a {type(state).__name__}, not a dict)")
    return state


def _field(state: dict, key: str, kind: type, *, path: str):
    value = state.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise LlavaLnError(f"{path}: not a DeepSpeed ZeRO shard ({key!r} missing or not a {getattr(kind, '__name__', kind)})")
    return value


def _optim_files(step_dir: str) -> list:
    """The *_optim_states.pt files, one per data-parallel rank, in rank order."""
    found = {}
    for name in os.listdir(step_dir):
        match = _OPTIM_FILE.match(name)
        if not match:
            continue
        rank, model_rank = int(match.group(1)), int(match.group(2))
        if model_rank != 0:
            raise LlavaLnError(f"{step_dir}: {name} is a model-parallel shard; only data-parallel ZeRO is supported")
        if rank in found:
            raise LlavaLnError(f"{step_dir}: two optimizer shards for rank {rank} ({found[rank]}, {name})")
        found[rank] = name
    if not found:
        raise LlavaLnError(f"{step_dir}: no DeepSpeed optimizer shards (*_optim_states.pt)")
    if sorted(found) != list(range(len(found))):
        raise LlavaLnError(f"{step_dir}: optimizer shards for ranks {sorted(found)}; ranks 0..{len(found) - 1} "
                           "are needed (an incomplete save?)")
    return [os.path.join(step_dir, found[rank]) for rank in range(len(found))]


def _model_states_file(step_dir: str, stage: int) -> str:
    name = "mp_rank_00_model_states.pt" if stage <= 2 else "zero_pp_rank_0_mp_rank_00_model_states.pt"
    path = os.path.join(step_dir, name)
    if not os.path.isfile(path):
        raise LlavaLnError(f"{step_dir}: no {name} (the parameter names and shapes of a ZeRO-{stage} checkpoint)")
    return path


def _param_shapes(path: str) -> list:
    """[{name: shape}] per optimizer parameter group, in the order DeepSpeed flattened them."""
    groups = _field(read_shard(path), "param_shapes", list, path=path)
    shapes = []
    for group in groups:
        if not isinstance(group, dict):
            raise LlavaLnError(f"{path}: param_shapes holds a {type(group).__name__}, not a dict of shapes")
        checked = {}
        for name, shape in group.items():
            if not isinstance(name, str) or not isinstance(shape, (torch.Size, tuple, list)) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise LlavaLnError(f"{path}: param_shapes entry {name!r} is not a parameter name with a shape")
            checked[name] = torch.Size(shape)
        shapes.append(checked)
    return shapes


def _optimizer_state(path: str) -> dict:
    return _field(read_shard(path), "optimizer_state_dict", dict, path=path)


def _flat_groups(optimizer: dict, key: str, path: str) -> list:
    groups = _field(optimizer, key, list, path=path)
    for tensor in groups:
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or not tensor.is_floating_point():
            raise LlavaLnError(f"{path}: {key} must hold flat floating-point tensors")
    return groups


class _Flat:
    """Several 1-D tensors read as one vector, sliced without concatenating them all."""

    def __init__(self, pieces: list):
        self.pieces = pieces
        self.starts = [0]
        for piece in pieces:
            self.starts.append(self.starts[-1] + piece.numel())

    def __len__(self) -> int:
        return self.starts[-1]

    def take(self, start: int, length: int) -> list:
        parts, end = [], start + length
        for index, piece in enumerate(self.pieces):
            lo, hi = max(start, self.starts[index]), min(end, self.starts[index + 1])
            if lo < hi:
                parts.append(piece[lo - self.starts[index]:hi - self.starts[index]])
        return parts


def _stitch(parts: list, shape: torch.Size) -> torch.Tensor:
    joined = parts[0] if len(parts) == 1 else torch.cat(parts)
    return joined[:shape.numel()].float().clone().view(shape)


def _consolidate_stage12(step_dir: str, files: list, states: list, *, shapes: list, paddings: list | None) -> dict:
    per_rank = [_flat_groups(state, "single_partition_of_fp32_groups", file) for file, state in zip(files, states)]
    if any(len(groups) != len(shapes) for groups in per_rank):
        raise LlavaLnError(f"{step_dir}: the optimizer shards hold another number of parameter groups than "
                           f"param_shapes ({len(shapes)})")
    tensors, align = {}, 2 * len(files)
    for group, group_shapes in enumerate(shapes):
        flat = _Flat([groups[group] for groups in per_rank])
        offset = 0
        for position, (name, shape) in enumerate(group_shapes.items()):
            if offset + shape.numel() > len(flat):
                raise LlavaLnError(f"{step_dir}: parameter group {group} ends before tensor {name} (truncated shard?)")
            tensors[name] = _stitch(flat.take(offset, shape.numel()), shape)
            offset += shape.numel() + (paddings[group][position] if paddings else 0)
        # DeepSpeed pads each group's buffer to a multiple of 2 x ranks; anything beyond that is not ours.
        if math.ceil(offset / align) != math.ceil(len(flat) / align):
            raise LlavaLnError(f"{step_dir}: parameter group {group} holds {len(flat)} values but its tensors need "
                               f"{offset} (shards from another run mixed in?)")
    return tensors


def _consolidate_stage3(step_dir: str, files: list, states: list, *, shapes: list) -> dict:
    ranks = len(files)
    flats = [_Flat(_flat_groups(state, "fp32_flat_groups", file)) for file, state in zip(files, states)]
    if len({len(flat) for flat in flats}) != 1:
        raise LlavaLnError(f"{step_dir}: the ranks' optimizer shards differ in size (shards from another run mixed in?)")
    tensors, offset = {}, 0
    for name, shape in ((n, s) for group in shapes for n, s in group.items()):
        piece = math.ceil(shape.numel() / ranks)
        if offset + piece > len(flats[0]):
            raise LlavaLnError(f"{step_dir}: the optimizer shards end before tensor {name} (truncated shard?)")
        tensors[name] = _stitch([part for flat in flats for part in flat.take(offset, piece)], shape)
        offset += piece
    if offset != len(flats[0]):
        raise LlavaLnError(f"{step_dir}: the optimizer shards hold {len(flats[0])} values per rank but the tensors "
                           f"need {offset} (shards from another run mixed in?)")
    return tensors


def consolidate_zero_checkpoint(folder: str) -> dict:
    """Full fp32 trainable tensors (named as the trained module's parameters) from DeepSpeed shards in folder."""
    step_dir = zero_checkpoint_dir(folder)
    if step_dir is None:
        raise LlavaLnError(f"{folder}: no DeepSpeed checkpoint (no `latest` file or global_step* folder)")
    files = _optim_files(step_dir)
    states = [_optimizer_state(file) for file in files]  # memory-mapped: only what is sliced gets read
    first = states[0]
    stage = first.get("zero_stage")
    if not isinstance(stage, int) or isinstance(stage, bool) or int(stage) not in (1, 2, 3):
        raise LlavaLnError(f"{files[0]}: zero_stage {stage!r} is not 1, 2 or 3")
    stage = int(stage)
    counts = first.get("partition_count")
    counts = counts if isinstance(counts, list) else [counts]
    if not counts or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise LlavaLnError(f"{files[0]}: partition_count {first.get('partition_count')!r} is not a rank count")
    if max(counts) != len(files):
        raise LlavaLnError(f"{step_dir}: the shards were written by {max(counts)} ranks but {len(files)} optimizer "
                           "shard(s) are here (an incomplete save or copy?)")
    shapes = _param_shapes(_model_states_file(step_dir, stage))
    if stage == 3:
        tensors = _consolidate_stage3(step_dir, files, states, shapes=shapes)
    else:
        paddings = first.get("param_alignment_paddings")
        if paddings is not None and (not isinstance(paddings, list) or len(paddings) != len(shapes) or any(
                not isinstance(p, list) or len(p) != len(s) for p, s in zip(paddings, shapes))):
            raise LlavaLnError(f"{files[0]}: param_alignment_paddings does not match the parameter groups")
        tensors = _consolidate_stage12(step_dir, files, states, shapes=shapes, paddings=paddings)
    for name, tensor in tensors.items():
        check_finite(tensor, name, step_dir)
    return tensors
