"""Run folders and resumable checkpoint-<step>/ folders, written the same way by every strategy.

OUTPUT_DIR (end of training) and every checkpoint-<step>/ hold the run-folder format of
llava_ln.checkpoint (manifest.json + trained.safetensors [+ adapter/] [+
stage1_connector.safetensors]), so any checkpoint loads for inference as it is. A checkpoint adds
resume/: fp32 masters and Adam moments keyed by parameter name (sharded safetensors), per-rank RNG
states (tensors, or JSON lists for python and numpy), the LR schedule, the data position and the
optimizer step count in trainer_state.json. Nothing is pickled. Name-keyed full tensors make the
state independent of the ZeRO stage and of the number of ranks. Rank 0 writes everything into a
temporary folder that replaces checkpoint-<step>/ only when complete (core.atomic.atomic_directory),
so a crash mid-save leaves the previous one usable.
"""
import glob
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from llava_ln.checkpoint.integrity import sha256_file
from llava_ln.checkpoint.manifest import Manifest
from llava_ln.checkpoint.run_folder import connector_parameters, save_run
from llava_ln.checkpoint.tensors import ShardedTensorWriter, TensorReader, load_tensors, save_tensors
from llava_ln.core.atomic import write_json_atomic
from llava_ln.core.distributed import DistContext, all_gather_objects, barrier
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import unwrap
from llava_ln.training.guards.resume_files import read_trainer_state, verify_resume_files
from llava_ln.training.guards.save_guard import RankZeroWrites, kept_note
from llava_ln.training.strategy import OPTIMIZER_STATE_KEYS, Strategy
from llava_ln.tuning.plan import TuningPlan

logger = logging.getLogger(__name__)

RESUME_DIR = "resume"
STATE_FILE = "trainer_state.json"
RESUME_SHARD_BYTES = 2 * 2**30  # bounded shards: rank 0 never holds a 7B model's Adam state at once
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass(kw_only=True)
class TrainState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in `epoch` (the data position)
    skipped_steps: int = 0  # steps skipped as non-finite: no optimizer update (training.guards.step_guard)


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """What must not change across a resume (global batch and data decide the data position)."""

    tune_mode: str
    global_batch_size: int
    dataset_size: int
    total_steps: int
    world_size: int
    run_id: str = ""  # the run these checkpoints belong to (training.guards.run_ownership)
    flags: dict = field(default_factory=dict)  # the flags that define the run (training.guards.resume_check)
    # --packing: the packer's row length, which the attention implementation decides (the budget under FlashAttention,
    # else the median sample); no flag records it, and the micro-batches of every epoch follow from it.
    packed_row_tokens: int | None = None


def _shape(param) -> tuple:
    return tuple(getattr(param, "ds_shape", param.shape))


class Checkpointer:
    """Saves run folders and checkpoints of one run, and restores a checkpoint into its strategy (all collective)."""

    def __init__(self, *, context: DistContext, strategy: Strategy, model: nn.Module, plan: TuningPlan,
                 manifest: Manifest, final_dtype: torch.dtype, stage1_connector: dict | None):
        """
        Args:
            context: this process's rank and world size.
            strategy: the set-up strategy that holds the fp32 masters and optimizer moments.
            model: the tuned model (the PeftModel under LoRA), for the run folder's config files and names.
            plan: what trains; its trainable tensors (and LoRA factors) are what is saved.
            manifest: the run's manifest; each save writes it with its own global_step.
            final_dtype: the dtype of trained.safetensors (the plan's saved_dtype).
            stage1_connector: the stage-1 connector's file values when the connector stays frozen, else None.
        """
        self.context = context
        self.strategy = strategy
        self.model = model
        self.manifest = manifest
        self.final_dtype = final_dtype
        self.stage1_connector = stage1_connector
        self.named = [(n, p) for n, p in unwrap(model).named_parameters() if n in plan.trainable]
        # LoRA factors go to the PEFT adapter under PEFT's own names (relative to the PeftModel).
        peft_names = {id(p): n for n, p in model.named_parameters()}
        self.lora_names = {n: peft_names[id(p)] for n, p in self.named if n in plan.lora_names}

    # ---- run folder (OUTPUT_DIR at the end, and the inference half of a checkpoint) ----
    def _trained_tensors(self, writes=None):
        tensors, lora = {}, {}
        for name, param in self.named:
            value = self.strategy.get_master(param)  # collective
            if writes is not None:
                writes.check_finite(name, value)
            if name in self.lora_names:
                lora[self.lora_names[name]] = value
            else:
                tensors[name] = value.to(self.final_dtype)
        return tensors, lora

    def save_run_folder(self, directory: str, global_step: int) -> None:
        """Collective; rank 0 writes. Files are atomic and the manifest comes last."""
        keeps = kept_note(list_checkpoints(directory), directory) if self.context.is_main else ""
        with RankZeroWrites(self.context, directory, folder=False, keeps=keeps) as writes:
            tensors, lora = self._trained_tensors(writes)
            manifest = replace(self.manifest, global_step=global_step)
            writes.run(save_run, directory, self.model, manifest, tensors=tensors,
                       lora_state_dict=lora if manifest.has_adapter else None,
                       stage1_connector=self.stage1_connector)

    # ---- resumable checkpoints ----
    def save_checkpoint(self, output_dir: str, state: TrainState, scheduler: LambdaLR, *, identity: RunIdentity,
                        save_total_limit: int | None = None) -> str:
        """Collective; rank 0 writes into a temporary folder that replaces checkpoint-<step> when complete."""
        final = os.path.join(output_dir, f"checkpoint-{state.global_step}")
        rng_states = all_gather_objects(self.context, capture_rng())
        tensors, lora = {}, {}
        keeps = kept_note(list_checkpoints(output_dir), final) if self.context.is_main else ""
        with RankZeroWrites(self.context, final, folder=True, keeps=keeps) as writes:
            resume = os.path.join(writes.tmp, RESUME_DIR) if writes.tmp else None
            writers = {}
            if resume:
                writers = {key: writes.run(ShardedTensorWriter, resume, key, RESUME_SHARD_BYTES)
                           for key in ("master", *OPTIMIZER_STATE_KEYS)}
            for name, param in self.named:
                values = {"master": self.strategy.get_master(param)}  # collective
                for key in OPTIMIZER_STATE_KEYS:
                    values[key] = self.strategy.get_optimizer_state(param, key)  # collective
                if not resume:
                    continue
                for key, writer in writers.items():
                    writes.check_finite(f"{name} ({key})", values[key])
                    writes.run(writer.add, name, values[key])
                if name in self.lora_names:
                    lora[self.lora_names[name]] = values["master"]
                else:
                    tensors[name] = values["master"].to(self.final_dtype)
            if resume:
                digests = {}  # resume/ file -> sha256, recorded in the checkpoint's manifest
                for writer in writers.values():
                    digests.update(writes.run(writer.close) or {})
                rng_tensors, rng_json = split_rng(rng_states)
                digests.update(writes.run(save_tensors, resume, "rng", rng_tensors) or {})
                writes.run(write_json_atomic, os.path.join(resume, STATE_FILE), {
                    "state": asdict(state),
                    "run": asdict(identity),
                    "optimizer_steps": state.global_step - state.skipped_steps,
                    "scheduler": _jsonable_scheduler_state(scheduler.state_dict()),
                    "loss_scaler": self.strategy.loss_scaler_state(),
                    "rng": rng_json,
                })
                digests[STATE_FILE] = writes.run(sha256_file, os.path.join(resume, STATE_FILE))
                writes.run(save_run, writes.tmp, self.model, replace(self.manifest, global_step=state.global_step),
                           tensors=tensors, lora_state_dict=lora if self.manifest.has_adapter else None,
                           stage1_connector=self.stage1_connector,
                           extra_files={f"{RESUME_DIR}/{name}": digest for name, digest in digests.items()})
        if self.context.is_main:
            logger.info("saved %s", final)
            if save_total_limit:
                prune_checkpoints(output_dir, save_total_limit, identity.run_id)
        barrier(self.context)
        return final

    def load_checkpoint(self, directory: str, scheduler: LambdaLR, identity: RunIdentity, *,
                        first_batch: dict) -> TrainState:
        """Collective: restore masters, moments, step count, schedule, RNG; return the data position."""
        resume = os.path.join(directory, RESUME_DIR)
        state_path = os.path.join(resume, STATE_FILE)
        if not os.path.exists(state_path):
            raise LlavaLnError(f"--resume_from_checkpoint {directory}: no {RESUME_DIR}/{STATE_FILE} (not a "
                               "checkpoint-<step> folder of llava-ln training, or an incomplete one)")
        verify_resume_files(directory, RESUME_DIR, ("master", *OPTIMIZER_STATE_KEYS, "rng"), STATE_FILE)
        saved = read_trainer_state(state_path, TrainState)
        same_ranks = _check_identity(directory, saved["run"], identity)
        readers = {key: TensorReader(os.path.join(resume, key)) for key in ("master", *OPTIMIZER_STATE_KEYS)}
        _check_names(directory, readers["master"], self.named)
        self.strategy.materialise_optimizer_state(first_batch)
        for name, param in self.named:
            self.strategy.set_master(param, readers["master"].get(name))
            for key in OPTIMIZER_STATE_KEYS:
                self.strategy.set_optimizer_state(param, key, readers[key].get(name))
        self.strategy.set_optimizer_step(saved["optimizer_steps"])
        _resume_schedule(scheduler, saved["scheduler"])
        for group, lr in zip(self.strategy.scheduler_optimizer().param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        self.strategy.load_loss_scaler_state(saved.get("loss_scaler"))
        # [IMPORTANT] Deliberate approximation: on another number of ranks the per-rank RNG states (dropout) cannot
        # be matched to ranks, so they start afresh and the run continues close to, not exactly like, the
        # uninterrupted one. Weights, optimizer state, schedule and data position still carry over exactly.
        if same_ranks:
            rng = join_rng(load_tensors(os.path.join(resume, "rng")), saved["rng"], self.context.rank)
            try:
                restore_rng(rng)
            except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as err:
                raise LlavaLnError(f"--resume_from_checkpoint {directory}: the RNG state of rank {self.context.rank} "
                                   f"cannot be restored ({err}); the checkpoint is damaged") from None
        barrier(self.context)
        return TrainState(**saved["state"])


def _jsonable_scheduler_state(state: dict) -> dict:
    # LambdaLR stores its lambdas' attributes (empty for transformers' partials); floats and ints otherwise.
    return {k: v for k, v in state.items() if k != "lr_lambdas"} | {"lr_lambdas": [None] * len(state.get(
        "lr_lambdas", []))}


def _resume_schedule(scheduler: LambdaLR, saved: dict) -> None:
    """The saved position on this run's schedule: base rates and shape come from the flags (the saved ones
    unless --allow_changed_flags changed them), as LambdaLR.step would compute them."""
    base_lrs = list(scheduler.base_lrs)
    scheduler.load_state_dict(saved)
    scheduler.base_lrs = base_lrs
    scheduler._last_lr = [base * factor(scheduler.last_epoch) for factor, base in zip(scheduler.lr_lambdas, base_lrs)]


def _check_identity(directory: str, saved: dict, current: RunIdentity) -> bool:
    for key in ("tune_mode", "global_batch_size", "dataset_size", "packed_row_tokens"):
        if key == "packed_row_tokens" and key not in saved:
            continue  # a checkpoint written before it was recorded resumes as before
        if saved.get(key) != getattr(current, key):
            hint = " (the attention implementation decides it: --attn_implementation)" if key == "packed_row_tokens" \
                else ""
            raise LlavaLnError(f"--resume_from_checkpoint {directory}: it was saved with {key}={saved.get(key)!r} but "
                               f"this run has {getattr(current, key)!r}{hint}; resume needs the same")
    if saved.get("total_steps") != current.total_steps:
        logger.warning("resume: the run now has %s steps (was %s); the LR schedule follows the saved one",
                       current.total_steps, saved.get("total_steps"))
    if saved.get("world_size") != current.world_size:
        logger.warning("resume: %s ranks now, %s when saved; weights, optimizer and data position carry over, "
                       "per-rank RNG states (dropout) start afresh", current.world_size, saved.get("world_size"))
        return False
    return True


def _check_names(directory: str, reader: TensorReader, named: list) -> None:
    stored, expected = reader.names(), {n for n, _ in named}
    missing, extra = sorted(expected - stored), sorted(stored - expected)
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which this run does not train"
        raise LlavaLnError(f"--resume_from_checkpoint {directory}: the checkpoint {what} (saved with another --tune_mode, "
                           "--tune_embeddings, --tune_connector, tower setting (--vision_tune_mode, "
                           "--vision_tune_last_layers, --mm_vision_select_layer) or model?)")
    for name, param in named:
        shape = reader.shape(name)
        if shape != _shape(param):
            raise LlavaLnError(f"--resume_from_checkpoint {directory}: tensor {name} has shape {shape}, the model "
                               f"expects {_shape(param)}")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(output_dir, "checkpoint-*")):
        match = CHECKPOINT_PATTERN.match(os.path.basename(path))
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(output_dir: str, keep: int, run_id: str) -> None:
    """Remove all but the newest `keep` checkpoints of run_id; another run's are never touched."""
    from llava_ln.training.guards.run_ownership import owned_checkpoints  # it reads this module's file layout

    for _, path in owned_checkpoints(output_dir, run_id)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


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


def restore_exact_connector(strategy: Strategy, model: nn.Module, values: dict | None) -> None:
    """After the strategy set up its masters: put the fp32 file values into trainable connector masters."""
    if not values:
        return
    for name, param in connector_parameters(model).items():
        if param.requires_grad:
            strategy.set_master(param, values[name])
