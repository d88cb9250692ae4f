"""A run folder belongs to one run: where a run starts or resumes, and which checkpoints are its own.

A fresh run gets a run id (random hex); a resumed run keeps its checkpoint's. The id is recorded in
run_config.json (the folder's owner) and in every checkpoint's trainer_state.json, so:
  * a fresh run refuses OUTPUT_DIR when it holds a run; --overwrite_output_dir moves that folder aside
    to a timestamped sibling, `<OUTPUT_DIR>.previous-<UTC time>`, and starts in an empty one (refused
    when an input of this run, or the working directory, lies inside it);
  * resuming into a folder that holds another run's checkpoints is refused (--overwrite_output_dir
    moves that run aside first), and so is resuming from checkpoint-<k> into its own folder while newer
    checkpoints of the run lie there: the resumed run would overwrite them (resume into a new folder);
  * `--resume_from_checkpoint latest` takes the newest checkpoint, and refuses a folder whose
    checkpoints belong to more than one run (copied in by hand: nothing here puts them together);
    --save_total_limit prunes only the current run's checkpoints (owned_checkpoints).
Checkpoints written before run ids existed have none: they count as the folder's own but are never
pruned. Before a run continues in a folder, what killed saves left there is cleaned (core.atomic).
An OUTPUT_DIR that is, lies inside or contains an input of the run (the base model's folder, the
data, the tower) is refused whatever the flags. Rank 0 decides and broadcasts the decision (or its
error), so every rank acts on the same folder state; train.py holds OUTPUT_DIR's lock
(core.folder_lock) for the whole run, so no second process decides on the same folder meanwhile.
"""
import logging
import os
import time
import uuid
from dataclasses import dataclass

from llava_ln.checkpoint.manifest import MANIFEST_NAME
from llava_ln.core.atomic import remove_stale_temporaries, restore_interrupted_replacements
from llava_ln.core.bounded_json import read_json
from llava_ln.core.distributed import broadcast_object
from llava_ln.core.errors import LlavaLnError
from llava_ln.core.paths import refuse_overlap
from llava_ln.data.index import parse_data_path
from llava_ln.training.checkpointing import RESUME_DIR, STATE_FILE, list_checkpoints

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
MOVED_ASIDE = ".previous-"
UNREADABLE = "<unreadable>"  # a checkpoint whose trainer_state.json cannot be read: never pruned


@dataclass(frozen=True)
class RunStart:
    run_id: str
    resume_dir: str | None = None
    moved_aside: str | None = None  # where --overwrite_output_dir put the earlier run


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def checkpoint_run_id(checkpoint: str) -> str | None:
    """The run id in a checkpoint's trainer_state.json; None when it predates run ids; UNREADABLE."""
    try:
        return read_json(os.path.join(checkpoint, RESUME_DIR, STATE_FILE))["run"].get("run_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return UNREADABLE


def folder_run_id(output_dir: str) -> str | None:
    """The run that owns output_dir, as its run_config.json records it (None when nothing says)."""
    try:
        return read_json(os.path.join(output_dir, RUN_CONFIG))["resolved"].get("run_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def owned_checkpoints(output_dir: str, run_id: str) -> list[tuple[int, str]]:
    """(step, path) of the checkpoints in output_dir that run_id wrote, oldest first."""
    return [(step, path) for step, path in list_checkpoints(output_dir) if checkpoint_run_id(path) == run_id]


def run_inputs(model_args, data_args, args) -> list[tuple[str, str]]:
    """(flag, path) of every file or folder a training run reads."""
    inputs = [("--model_name_or_path", model_args.model_name_or_path),
              ("--tokenizer_name_or_path", model_args.tokenizer_name_or_path),
              ("--vision_tower", model_args.vision_tower), ("--image_folder", data_args.image_folder),
              ("--pretrain_mm_mlp_adapter", args.pretrain_mm_mlp_adapter), ("--deepspeed", args.deepspeed)]
    if data_args.data_path:
        inputs += [("--data_path", source.path) for source in parse_data_path(data_args.data_path)]
    return [(flag, path) for flag, path in inputs if path]


def start_run(args, context, inputs: list[tuple[str, str]]) -> RunStart:
    """Decide (rank 0) how this run uses OUTPUT_DIR and create it; every rank gets the same RunStart.

    inputs: (flag, path) of what this run reads, so --overwrite_output_dir never moves them away.
    """
    decision = None
    if context.is_main:
        try:
            decision = _decide(args, inputs)
        except LlavaLnError as err:
            decision = str(err)
        except OSError as err:
            decision = f"--output_dir {args.output_dir}: {err.strerror or err} ({err.filename or args.output_dir})"
    decision = broadcast_object(context, decision)
    if isinstance(decision, str):
        raise LlavaLnError(decision)
    return decision


def _decide(args, inputs) -> RunStart:
    output_dir = args.output_dir
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise LlavaLnError(f"--output_dir {output_dir}: exists and is not a folder")
    refuse_overlap(output_dir, inputs, "llava-ln train")
    restore_interrupted_replacements(output_dir)
    requested = args.resume_from_checkpoint
    if not requested:
        moved = _make_room_for_fresh_run(args, inputs)
        start = RunStart(run_id=new_run_id(), moved_aside=moved)
    elif requested == "latest":
        if args.overwrite_output_dir:
            raise LlavaLnError("--overwrite_output_dir starts a new run; it cannot resume `latest` from the folder it "
                               "moves aside")
        start = _resume(args, inputs, _latest(output_dir))
    else:
        if not os.path.isdir(requested):
            raise LlavaLnError(f"--resume_from_checkpoint {requested}: no such folder")
        start = _resume(args, inputs, requested)
    os.makedirs(output_dir, exist_ok=True)
    removed = remove_stale_temporaries(output_dir)
    if removed:
        logger.info("removed %d leftover(s) of interrupted saves from %s: %s", len(removed), output_dir,
                    ", ".join(removed[:5]))
    return start


def _holds_run(output_dir: str) -> bool:
    return os.path.exists(os.path.join(output_dir, MANIFEST_NAME)) or bool(list_checkpoints(output_dir))


def _make_room_for_fresh_run(args, inputs) -> str | None:
    if not _holds_run(args.output_dir):
        return None
    if not args.overwrite_output_dir:
        raise LlavaLnError(f"--output_dir {args.output_dir} already holds a run; pass --resume_from_checkpoint "
                           "(or `latest`) to continue it, or --overwrite_output_dir to move it aside and start over")
    return _move_aside(args.output_dir, inputs)


def _latest(output_dir: str) -> str:
    found = list_checkpoints(output_dir)
    if not found:
        raise LlavaLnError(f"--resume_from_checkpoint latest: {output_dir} holds no checkpoint-<step>")
    runs = {checkpoint_run_id(path) for _, path in found} - {None, UNREADABLE}
    if len(runs) > 1:
        owner = folder_run_id(output_dir)
        other = next(os.path.basename(p) for _, p in reversed(found) if checkpoint_run_id(p) not in (owner, None))
        raise LlavaLnError(f"--resume_from_checkpoint latest: {output_dir} holds checkpoints of more than one run "
                           f"({other} belongs to another); pass the checkpoint to resume from, with a new --output_dir")
    return found[-1][1]


def _resume(args, inputs, checkpoint: str) -> RunStart:
    run_id = checkpoint_run_id(checkpoint)
    step = _step_of(checkpoint)
    inside = _inside(checkpoint, args.output_dir)
    foreign, newer = [], []
    for other_step, path in list_checkpoints(args.output_dir):
        other = checkpoint_run_id(path)
        if _same_path(path, checkpoint):
            continue
        if other == run_id or UNREADABLE in (other, run_id) or None in (other, run_id):
            if step is not None and other_step > step:
                newer.append(os.path.basename(path))
        else:
            foreign.append(os.path.basename(path))
    owner = folder_run_id(args.output_dir)
    finished_other = (os.path.exists(os.path.join(args.output_dir, MANIFEST_NAME)) and owner is not None
                      and run_id not in (None, UNREADABLE) and owner != run_id)
    moved = None
    if foreign or finished_other:
        what = f"checkpoints of another run ({', '.join(foreign[:3])})" if foreign else "another run's final weights"
        if not args.overwrite_output_dir or inside:
            raise LlavaLnError(f"--output_dir {args.output_dir} holds {what}; --resume_from_checkpoint {checkpoint} "
                               "belongs to a different run: resume into an empty folder or the checkpoint's own, or "
                               "pass --overwrite_output_dir to move that folder aside")
        moved = _move_aside(args.output_dir, inputs + [("--resume_from_checkpoint", checkpoint)])
    if newer:
        raise LlavaLnError(f"--resume_from_checkpoint {checkpoint}: {args.output_dir} also holds newer checkpoints of "
                           f"this run ({', '.join(newer[:3])}), which the resumed run would overwrite; resume into a "
                           "new --output_dir, or resume `latest`")
    return RunStart(run_id=run_id if run_id not in (None, UNREADABLE) else new_run_id(), resume_dir=checkpoint,
                    moved_aside=moved)


def _move_aside(output_dir: str, inputs) -> str:
    here = os.path.realpath(output_dir)
    for flag, path in [("the working directory", os.getcwd())] + list(inputs):
        if path and os.path.exists(path) and _inside(path, here):
            raise LlavaLnError(f"--overwrite_output_dir: {flag} {path} lies inside --output_dir {output_dir}, which "
                               "would be moved aside; choose another --output_dir")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = f"{here}{MOVED_ASIDE}{stamp}", 1
    while os.path.lexists(target):
        target, n = f"{here}{MOVED_ASIDE}{stamp}-{n}", n + 1
    try:
        os.rename(here, target)
    except OSError as err:
        raise LlavaLnError(f"--overwrite_output_dir: could not move {output_dir} aside to {target} ({err.strerror}); "
                           "move or remove it yourself") from None
    logger.warning("--overwrite_output_dir: moved the earlier run in %s to %s", output_dir, target)
    return target


def _step_of(checkpoint: str) -> int | None:
    name = os.path.basename(os.path.normpath(checkpoint))
    return int(name.rpartition("-")[2]) if name.startswith("checkpoint-") and name[11:].isdigit() else None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _same_path(first: str, second: str) -> bool:
    return os.path.realpath(first) == os.path.realpath(second)
