"""Resume continues the run that was saved: the flags that change a run are compared with the checkpoint's.

Every checkpoint records the flags that decide what a run computes (run_defining_flags: model and
tower, data content, template, sequence length, tuning mode and its settings, every learning rate,
the schedule and warmup, optimizer settings, clipping, loss weighting, seed, global batch, step or
epoch budget, precision). Flags that only change how it is computed or reported (output and logging, saving,
DeepSpeed stage, number of ranks, gradient checkpointing, attention kernel, workers) are not
compared. The inputs count by content too: the data files and the stage-1 connector by sha256, and
the base LLM, its tokenizer and the vision tower by the sha256 of every file transformers reads from
their folders (weights, configs, tokenizer files; for a hub id, the cached snapshot), so weights
rewritten in place stop the resume. A flag added later compares a checkpoint that predates it as the
behaviour it then had (PREDATING_VALUES). Digests come from core.content_hash's cache while the kernel
says a file is unchanged, so a resume re-reads nothing it has already hashed. The paths themselves
also count as given (made absolute), so a moved model folder is a change too. A checkpoint written
before a fingerprint existed is not compared on it.

A resume whose flags differ stops with a one-line diff unless --allow_changed_flags: then the new
values are used from the resume step on (the learning rates and schedule included: the scheduler
keeps only its position from the checkpoint) and the change is recorded in run_config.json
("resolved.changed_flags") and in log.jsonl (an {"event": "resume"} line).
"""
import hashlib
import json
import logging
import os

from llava_ln.checkpoint.run_folder import resolve_connector_file
from llava_ln.checkpoint.tensors import tensor_files
from llava_ln.core.bounded_json import read_json
from llava_ln.core.content_hash import HashCache
from llava_ln.core.distributed import broadcast_object
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.index import parse_data_path
from llava_ln.training.checkpointing import RESUME_DIR, STATE_FILE
from llava_ln.tuning.vision_modes import FROZEN

logger = logging.getLogger(__name__)

MODEL_FLAGS = ("model_name_or_path", "tokenizer_name_or_path", "vision_tower", "mm_vision_select_layer",
               "mm_vision_select_feature", "mm_projector_type")
DATA_FLAGS = ("image_folder", "image_aspect_ratio", "conv_template", "model_max_length", "group_by_modality_length",
              "skip_bad_samples", "keep_image_placement")
TUNING_FLAGS = ("tune_mode", "tune_embeddings", "tune_connector", "lora_r", "lora_alpha", "lora_dropout",
                "mm_projector_lr", "norm_lr")
# The tower's settings, recorded only when the tower tunes: a frozen tower has none (its --vision_tune_mode,
# always recorded, says frozen), so a checkpoint from before tower tuning existed resumes unchanged.
TOWER_SETTINGS = ("vision_tune_last_layers", "vision_lora_r", "vision_lora_alpha", "mm_vision_tower_lr")
# What trains: a checkpoint holds exactly those tensors and their optimizer state, so not even
# --allow_changed_flags can change these at a resume.
FIXED_AT_RESUME = ("--tune_mode", "--vision_tune_mode", "--vision_tune_last_layers")
TRAINING_FLAGS = ("num_train_epochs", "max_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2",
                  "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "seed",
                  "data_seed", "tf32", "packing", "max_tokens_per_batch",
                  "loss_weighting")
PATH_FLAGS = ("model_name_or_path", "tokenizer_name_or_path", "vision_tower", "image_folder")
MODEL_FOLDER_FLAGS = ("model_name_or_path", "tokenizer_name_or_path", "vision_tower")
# What transformers (and llava-ln) read from a model folder; README files and the like may change freely.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt", ".tiktoken", ".jinja")


def _model_folder(path: str) -> str | None:
    """A local model folder, or the cached snapshot of a hub id (None when neither is on disk)."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id, no hub library: nothing to fingerprint
        return None
    return os.path.dirname(cached) if isinstance(cached, str) else None


def folder_fingerprint(path: str | None, cache: HashCache) -> dict | None:
    """{"sha256": digest of every model file's name and digest, "files": {name: sha256}}; None off disk."""
    folder = _model_folder(path) if path else None
    if folder is None:
        return None
    files = {}
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.endswith(MODEL_FILE_SUFFIXES) and not name.startswith(".") and os.path.isfile(full):
            files[name] = cache.sha256(full)
    combined = hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in files.items()).encode()).hexdigest()
    return {"sha256": combined, "files": files}


def _fingerprints(model_args, data_args, args) -> dict:
    """Content hashes of every input (rank 0 reads, the others receive)."""
    cache = HashCache()
    data = []
    for source in parse_data_path(data_args.data_path):
        try:
            data.append({"sha256": cache.sha256(source.path), "count": source.count})
        except OSError as err:
            raise LlavaLnError(f"--data_path {source.path}: cannot read it ({err.strerror})") from None
    connector = None
    if args.pretrain_mm_mlp_adapter:
        resolved = resolve_connector_file(args.pretrain_mm_mlp_adapter)
        files = [resolved] if os.path.isfile(resolved) else tensor_files(os.path.dirname(resolved),
                                                                        os.path.basename(resolved))
        connector = [cache.sha256(path) for path in files]
    found = {"data": data, "pretrain_mm_mlp_adapter": connector}
    for name in MODEL_FOLDER_FLAGS:
        try:
            found[name] = folder_fingerprint(getattr(model_args, name, None), cache)
        except OSError as err:
            raise LlavaLnError(f"--{name} {getattr(model_args, name)}: cannot read it ({err.strerror})") from None
    cache.save()
    return found


def run_defining_flags(model_args, data_args, tuning_args, args, *, context, precision: str,
                       global_batch_size: int) -> dict:
    """`--flag` -> value for every flag that changes what the run computes (JSON-ready)."""
    flags = {}
    for source, names in ((model_args, MODEL_FLAGS), (data_args, DATA_FLAGS), (tuning_args, TUNING_FLAGS),
                          (args, TRAINING_FLAGS)):
        for name in names:
            value = getattr(source, name, None)
            if name in PATH_FLAGS and isinstance(value, str) and os.path.exists(value):
                value = os.path.abspath(value)
            flags[f"--{name}"] = value
    flags["--vision_tune_mode"] = getattr(tuning_args, "vision_tune_mode", FROZEN)
    if flags["--vision_tune_mode"] != FROZEN:
        flags.update({f"--{name}": getattr(tuning_args, name) for name in TOWER_SETTINGS})
    fingerprints = None
    if context.is_main:
        try:
            fingerprints = _fingerprints(model_args, data_args, args)
        except LlavaLnError as err:
            fingerprints = str(err)
    fingerprints = broadcast_object(context, fingerprints)
    if isinstance(fingerprints, str):
        raise LlavaLnError(fingerprints)
    flags["--data_path (content)"] = fingerprints["data"]
    flags["--pretrain_mm_mlp_adapter (content)"] = fingerprints["pretrain_mm_mlp_adapter"]
    for name in MODEL_FOLDER_FLAGS:
        flags[f"--{name} (content)"] = fingerprints[name]
    flags["precision"] = precision
    flags["global_batch_size"] = global_batch_size
    return flags


def saved_flags(checkpoint: str) -> dict | None:
    """The run-defining flags a checkpoint recorded; None when it predates them or cannot be read."""
    try:
        flags = read_json(os.path.join(checkpoint, RESUME_DIR, STATE_FILE))["run"].get("flags")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # an unreadable state file is reported when the checkpoint is loaded
    return flags if isinstance(flags, dict) else None


# What a checkpoint written before a run-defining flag existed trained with (its behaviour then).
PREDATING_VALUES = {"--loss_weighting": "llava", "--vision_tune_mode": FROZEN}


def changed_flags(saved: dict, current: dict) -> dict:
    """flag -> {"checkpoint": old, "now": new} for every run-defining flag that differs."""
    # JSON round trip on both sides: tuples become lists and floats compare as the file holds them.
    predating = {flag: value for flag, value in PREDATING_VALUES.items() if flag in current}
    saved, current = json.loads(json.dumps({**predating, **saved})), json.loads(json.dumps(current))
    # A fingerprint the checkpoint predates is not compared (an older checkpoint resumes as before).
    flags = sorted((set(saved) | set(current)) - {f for f in current if f.endswith("(content)") and f not in saved})
    if FROZEN in (saved.get("--vision_tune_mode"), current.get("--vision_tune_mode")):
        flags = [flag for flag in flags if flag.removeprefix("--") not in TOWER_SETTINGS]  # the mode's change says it
    return {flag: {"checkpoint": saved.get(flag), "now": current.get(flag)}
            for flag in flags if saved.get(flag) != current.get(flag)}


def _shown(flag: str, value, other=None) -> str:
    """Content fingerprints as short digests (a data file's sample count, a folder's changed files, when
    compared with other); anything else as JSON."""
    if flag.endswith("(content)") and isinstance(value, dict):
        files = value.get("files") or {}
        before = (other.get("files") or {}) if isinstance(other, dict) else {}
        changed = sorted(name for name in set(files) | set(before) if files.get(name) != before.get(name))
        return str(value.get("sha256"))[:12] + (f" ({', '.join(changed[:3])} changed)" if changed and other else "")
    if flag.endswith("(content)") and isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, dict):
                count = item.get("count")
                items.append(str(item.get("sha256"))[:12] + (f":{count}" if count is not None else ""))
            else:
                items.append(str(item)[:12])
        return "[" + ", ".join(items) + "]"
    return json.dumps(value)


def check_resume_flags(checkpoint: str | None, current: dict, allow: bool) -> dict:
    """Compare with the checkpoint's flags: {} when they agree; the changes when --allow_changed_flags; else an error."""
    if checkpoint is None:
        return {}
    saved = saved_flags(checkpoint)
    if saved is None:
        logger.warning("resume: %s records no run flags (an older checkpoint); they are not compared", checkpoint)
        return {}
    changes = changed_flags(saved, current)
    if not changes:
        return {}
    listed = [f"{flag} {_shown(flag, c['now'], c['checkpoint'])} (checkpoint: {_shown(flag, c['checkpoint'])})"
              for flag, c in changes.items()]
    summary = ", ".join(listed[:6]) + (f" and {len(listed) - 6} more" if len(listed) > 6 else "")
    if not allow:
        raise LlavaLnError(f"--resume_from_checkpoint {checkpoint}: flags differ from the checkpoint's: {summary}; "
                           "resume with the checkpoint's values, or pass --allow_changed_flags to use the new ones")
    fixed = [line for flag, line in zip(changes, listed) if flag in FIXED_AT_RESUME]
    if fixed:
        raise LlavaLnError(f"--resume_from_checkpoint {checkpoint}: {', '.join(fixed)}: what trains cannot change at a "
                           "resume, not even with --allow_changed_flags (the checkpoint holds the tensors and optimizer "
                           "state of what trained); resume with the checkpoint's values, or start a new run from its "
                           "weights (--model_name_or_path)")
    logger.warning("resume with --allow_changed_flags: the new values are used from here on: %s", summary)
    return changes


def run_record(start, changed: dict) -> dict:
    """What run_config.json ("resolved") and a resume's log.jsonl line record about where the run came from."""
    return {"run_id": start.run_id, "resumed_from": start.resume_dir, "moved_aside": start.moved_aside,
            "changed_flags": changed}
