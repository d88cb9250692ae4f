"""Reading a checkpoint's resume state without trusting it: checksums first, then every field's type.

A checkpoint-<step>/manifest.json records the sha256 of each resume/ file (masters, Adam moments,
RNG states, trainer_state.json), written as the files were. Before anything of them is used, the
files resuming opens are checked against those digests (a flipped bit or a torn copy stops the run
with one line naming the file), and trainer_state.json is read as JSON and checked field by field,
so even a hand-edited or pre-checksum checkpoint fails with one line instead of a traceback from
deep inside the scheduler or the RNG.
"""
import os
from dataclasses import fields

from llava_ln.checkpoint.integrity import verify_files
from llava_ln.checkpoint.manifest import read_manifest
from llava_ln.checkpoint.tensors import tensor_file_names
from llava_ln.core.bounded_json import JsonLimitError, read_json
from llava_ln.core.errors import LlavaLnError


def verify_resume_files(checkpoint_dir: str, resume_dir: str, stems: tuple, state_file: str) -> None:
    """Check the files resuming opens (resume_dir/<stem> tensors and the state file) against the manifest."""
    manifest = read_manifest(checkpoint_dir)
    folder = os.path.join(checkpoint_dir, resume_dir)
    opened = [f"{resume_dir}/{name}" for stem in stems for name in tensor_file_names(folder, stem)]
    verify_files(checkpoint_dir, manifest, opened + [f"{resume_dir}/{state_file}"])


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_trainer_state(path: str, state_class) -> dict:
    """trainer_state.json as written by Checkpointer.save_checkpoint; LlavaLnError naming the bad field.

    state_class: the dataclass its `state` rebuilds (TrainState): every field there must be one of
    its fields and a step count; fields it added since (with defaults) may be absent.
    """
    try:
        saved = read_json(path)
    except JsonLimitError as err:
        raise LlavaLnError(f"{err}; the checkpoint is damaged, resume from an earlier one") from None
    problem = _problem(saved, {f.name for f in fields(state_class)})
    if problem:
        raise LlavaLnError(f"{path}: {problem}; the checkpoint is damaged, resume from an earlier one")
    return saved


def _problem(saved, state_fields: set) -> str | None:
    if not isinstance(saved, dict):
        return f"holds a JSON {type(saved).__name__}, not an object"
    for key, kind in (("state", dict), ("run", dict), ("scheduler", dict), ("rng", dict)):
        if not isinstance(saved.get(key), kind):
            return f"field {key!r} is missing or not an object"
    unknown = sorted(set(saved["state"]) - state_fields)
    if unknown:
        return f"state holds unknown field(s) {unknown}"
    for key in ("global_step", "epoch", "step_in_epoch", *sorted(saved["state"])):
        if not _is_count(saved["state"].get(key)):
            return f"state.{key} is {saved['state'].get(key)!r}, not a step count"
    if not _is_count(saved.get("optimizer_steps")):
        return f"optimizer_steps is {saved.get('optimizer_steps')!r}, not a step count"
    if saved.get("loss_scaler") is not None and not isinstance(saved["loss_scaler"], dict):
        return "field 'loss_scaler' is neither null nor an object"
    for rank, state in saved["rng"].items():
        if not isinstance(state, dict) or not isinstance(state.get("python"), list) or not isinstance(
                state.get("numpy"), list):
            return f"rng.{rank} is not a python/numpy RNG state"
    return None
