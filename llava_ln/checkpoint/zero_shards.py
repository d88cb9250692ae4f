"""Consolidate a DeepSpeed ZeRO checkpoint (per-rank shards) into full tensors, inside merge/export.

llava-ln's trainer writes gathered trainable tensors into every run folder, so this is the
fallback for a checkpoint folder that holds only DeepSpeed's own shards (`latest` plus
`global_step*/ *_model_states.pt, *_optim_states.pt`). Nobody runs zero_to_fp32 by hand:
merge and export call DeepSpeed's own consolidation utility here.

DeepSpeed's utility reads the shards with pickle. Before it runs, every shard is opened with
`torch.load(weights_only=True)`, allowing only the few DeepSpeed classes its checkpoints
legitimately contain (the ZeRO stage enum, loss scalers). A file that passes references no
other callable, so the unpickling that follows cannot run foreign code; a file that fails is
rejected with its name and nothing is unpickled.
"""
import contextlib
import glob
import io
import os
import re

import torch

from llava_ln.core.errors import LlavaLnError


def zero_checkpoint_dir(folder: str) -> str | None:
    """The global_step* folder of a DeepSpeed checkpoint in folder (via `latest`), or None."""
    latest = os.path.join(folder, "latest")
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as handle:
            tag = handle.read().strip()
        step_dir = os.path.join(folder, tag)
        if not os.path.isdir(step_dir):
            raise LlavaLnError(f"{latest} names {tag!r}, but {step_dir} does not exist")
        return step_dir
    steps = sorted(glob.glob(os.path.join(folder, "global_step*")), key=_step_number)
    return steps[-1] if steps else None


def _step_number(path: str) -> int:
    match = re.search(r"(\d+)$", path)
    return int(match.group(1)) if match else -1


def _allowed_deepspeed_classes() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return [ZeroStageEnum, LossScaler, DynamicLossScaler]


def vet_shards(step_dir: str) -> list:
    """Open every shard with weights_only=True (allow-listed DeepSpeed classes only); return the files."""
    files = sorted(glob.glob(os.path.join(step_dir, "*.pt")))
    if not files:
        raise LlavaLnError(f"{step_dir}: no DeepSpeed shard files (*.pt)")
    allowed = _allowed_deepspeed_classes()
    for file in files:
        try:
            with torch.serialization.safe_globals(allowed):
                torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # any failure means: do not unpickle this file
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LlavaLnError(f"{file}: refusing to consolidate a DeepSpeed shard that does not load with "
                               f"weights_only=True ({first_line})") from None
    return files


def consolidate_zero_checkpoint(folder: str, trainable_only: bool = True) -> dict:
    """Full fp32 tensors (named as the trained module's parameters) from DeepSpeed shards in folder."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise LlavaLnError(f"{folder} holds DeepSpeed shards; consolidating them needs deepspeed "
                           "(pip install 'llava-ln[train]')") from None
    step_dir = zero_checkpoint_dir(folder)
    if step_dir is None:
        raise LlavaLnError(f"{folder}: no DeepSpeed checkpoint (no `latest` file or global_step* folder)")
    vet_shards(step_dir)
    # DeepSpeed's utility prints progress meant for its CLI; keep our output to our own lines.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            state = get_fp32_state_dict_from_zero_checkpoint(
                folder, tag=os.path.basename(step_dir), exclude_frozen_parameters=trainable_only
            )
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise LlavaLnError(f"{step_dir}: DeepSpeed cannot consolidate this checkpoint ({err})") from None
    return {name: tensor.detach().clone() for name, tensor in state.items()}
