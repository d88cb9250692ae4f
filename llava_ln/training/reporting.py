"""A run's bookkeeping: its output folder, logging, progress and metrics, and what it records up front.

Output folder: one run per folder (training.guards.run_ownership decides whether this run starts fresh,
moves an earlier run aside under --overwrite_output_dir, or resumes, and from which checkpoint).

Progress and metrics, rank 0 only: a tqdm bar (loss, lr, grad norm, tokens/s), log.jsonl (one JSON
object per logging step, so a run's curve can be read without any logger installed; the tests
compare runs through it; in-training evaluation adds {"step", "eval": {...}} records), and
TensorBoard or Weights & Biases through --report_to.

Written before the first step, so a run can be checked and reproduced:
  run_config.json            every flag, as resolved (precision, world size, DeepSpeed config with
                             its "auto" values filled, model spec, step counts)
  trainable_parameters.txt   the per-group table of total and trainable parameters
  optimizer_groups.json      each optimizer group as the (possibly DeepSpeed-wrapped) optimizer
                             holds it: lr, weight decay, betas, and the tensors in it
"""
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

from llava_ln.core.atomic import atomic_path, write_json_atomic
from llava_ln.core.distributed import DistContext, barrier
from llava_ln.data.args import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.model.builder import MultimodalSpec
from llava_ln.training.args import TrainingArguments, refuse_missing_reporter, report_targets
from llava_ln.training.guards.run_ownership import RunStart, start_run
from llava_ln.training.guards.shared_storage import check_shared_output_dir
from llava_ln.training.memory.policy import Precision
from llava_ln.training.strategy import HoldsParamGroups, Strategy
from llava_ln.tuning.args import TuningArguments

logger = logging.getLogger(__name__)


def configure_logging(context: DistContext) -> None:
    """INFO from rank 0, warnings from the others, each line tagged with its rank."""
    level = logging.INFO if context.is_main else logging.WARNING
    root = logging.getLogger("llava_ln")
    root.setLevel(level)
    if not any(getattr(h, "_llava_ln", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"[%(asctime)s rank{context.rank}] %(levelname)s %(name)s: "
                                               "%(message)s", "%H:%M:%S"))
        handler._llava_ln = True
        root.addHandler(handler)
        root.propagate = False


def prepare_output_dir(args: TrainingArguments, context: DistContext,
                       inputs: Sequence[tuple[str, str]] = ()) -> RunStart:
    """Create OUTPUT_DIR for this run and say how it starts (fresh, or from which checkpoint).

    inputs: (flag, path) of what the run reads, which --overwrite_output_dir must not move aside.
    """
    start = start_run(args, context, list(inputs))
    if context.is_main and start.resume_dir is None:
        log = os.path.join(args.output_dir, LOG_FILE)
        if os.path.exists(log):
            os.remove(log)
    barrier(context)
    check_shared_output_dir(args.output_dir, start.resume_dir, context)  # multi-node: one OUTPUT_DIR, one checkpoint
    return start


LOG_FILE = "log.jsonl"


class MetricsWriter(Protocol):
    """A --report_to target: takes every log.jsonl record, then is closed once at the end."""

    def __call__(self, step: int, record: dict) -> None:
        """Write one record's numbers (scalars gives them as tags)."""

    def close(self) -> None:
        """Flush and release the target."""


class Reporter:
    """Rank 0's progress bar, log.jsonl and --report_to writers; on the other ranks every method does nothing.

    Implements the loop's ProgressReporter (training.loop)."""

    def __init__(self, args: TrainingArguments, context: DistContext, *, total_steps: int, start_step: int,
                 config: dict):
        """
        Args:
            total_steps, start_step: the progress bar's length and where it starts (a resumed run's step).
            config: the resolved config (resolved_config), shown by TensorBoard and W&B.
        """
        self.enabled = context.is_main
        self.output_dir = args.output_dir
        self.board_dir = tensorboard_dir(args) if "tensorboard" in report_targets(args) else None
        self.started, self.start_step, self.last_loss = time.perf_counter(), start_step, None
        self.bar = None
        self.writers: list[MetricsWriter] = []
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True,
                        disable=args.disable_tqdm)
        for target in report_targets(args):
            self.writers.append(_open_writer(target, args, config))
        self.interval_start = time.perf_counter()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, step: int, metrics: dict) -> None:
        """metrics: loss, lr, grad_norm, tokens (since the last log), loss_weighting and anything else numeric."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self.interval_start, 1e-9)
        self.interval_start = now
        record = {"step": step, **metrics}
        self.last_loss = metrics.get("loss", self.last_loss)
        if "tokens" in metrics:
            record["tokens_per_s"] = metrics["tokens"] / elapsed
        with open(os.path.join(self.output_dir, LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 grad_norm=f"{record['grad_norm']:.3f}",
                                 tok_s=f"{record.get('tokens_per_s', 0):.0f}", refresh=False)
        for writer in self.writers:
            writer(step, record)

    def event(self, step: int, record: dict) -> None:
        """A line in log.jsonl that is not a metric (it has an "event" key), e.g. a resume."""
        if self.enabled:
            with open(os.path.join(self.output_dir, LOG_FILE), "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, **record}) + "\n")

    def log_section(self, step: int, name: str, metrics: dict, *, seconds: float = 0.0) -> None:
        """A record of its own (e.g. name "eval": benchmark scores) in log.jsonl and the writers, plus a line.

        seconds: how long producing it took; left out of the training throughput (tokens_per_s)."""
        if not self.enabled:
            return
        self.interval_start += seconds
        record = {"step": step, name: metrics, "seconds": seconds}
        with open(os.path.join(self.output_dir, LOG_FILE), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for writer in self.writers:
            writer(step, record)
        shown = ", ".join(f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in metrics.items() if isinstance(value, (int, float)))
        self.message(f"step {step}: {name}: {shown}")

    def summary(self, step: int) -> str:
        """The line a run ends with: final loss, steps, time, where the run folder and TensorBoard files are."""
        loss = "n/a" if self.last_loss is None else f"{self.last_loss:.4f}"
        minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
        ran = step - self.start_step
        steps = f"{step} steps" + (f" ({ran} in this run, resumed at {self.start_step})" if self.start_step else "")
        board = self.board_dir or "not written (--report_to tensorboard writes it)"
        return (f"train: done: {steps} in {minutes}m{seconds:02d}s, final loss {loss}; run folder {self.output_dir}; "
                f"TensorBoard {board}")

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for writer in self.writers:
            writer.close()


def tensorboard_dir(args: TrainingArguments) -> str:
    return args.logging_dir or os.path.join(args.output_dir, "runs")


def _open_writer(target: str, args: TrainingArguments, config: dict) -> MetricsWriter:
    if target == "tensorboard":
        refuse_missing_reporter(target)  # checked with the flags already; here for callers that skip that
        from torch.utils.tensorboard import SummaryWriter

        board = SummaryWriter(log_dir=tensorboard_dir(args))
        board.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

        class TensorBoardWriter:
            def __call__(self, step, record):
                for key, value in scalars(record):
                    board.add_scalar(key, value, step)

            def close(self):
                board.close()

        return TensorBoardWriter()
    refuse_missing_reporter(target)
    import wandb

    run = wandb.init(name=args.run_name, config=config, dir=args.output_dir)

    class WandbWriter:
        def __call__(self, step, record):
            run.log(dict(scalars(record)), step=step)

        def close(self):
            run.finish()

    return WandbWriter()


def scalars(record: dict):
    """(tag, number) pairs of a record for TensorBoard / W&B: top-level numbers under train/, a nested
    section under its own name (eval/pope, grad_stats/norms_no_decay/var, lrs/connector_decay); lists
    (per-step gradient norms) stay in log.jsonl only."""
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            for sub, inner in _flat(value, key):
                yield sub, inner
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"train/{key}", value


def _flat(section: dict, prefix: str):
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}/{key}", value


RUN_CONFIG = "run_config.json"
TRAINABLE_TABLE = "trainable_parameters.txt"
OPTIMIZER_GROUPS = "optimizer_groups.json"


def resolved_config(model_args: ModelArguments, data_args: DataArguments, tuning_args: TuningArguments, *,
                    args: TrainingArguments, context: DistContext, precision: Precision, spec: MultimodalSpec,
                    strategy: Strategy, total_steps: int, steps_per_epoch: int, dataset_size: int) -> dict:
    return {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "tuning": asdict(tuning_args),
        "training": asdict(args),
        "resolved": {
            "world_size": context.world_size,
            "device": str(context.device),
            "backend": context.backend,
            "precision": precision.name,
            "strategy": type(strategy).__name__,
            "deepspeed_config": strategy.deepspeed_config,
            "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
            * context.world_size,
            "dataset_size": dataset_size,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "spec": spec.to_dict(),
        },
    }


def write_run_info(output_dir: str, config: dict, *, trainable_table: str, optimizer: HoldsParamGroups,
                   handed_groups: list[dict], names_by_id: dict) -> None:
    """Rank 0 only. trainable_table: format_trainable_table(model), taken before ZeRO-3 partitions it."""
    write_json_atomic(os.path.join(output_dir, RUN_CONFIG), config)
    with atomic_path(os.path.join(output_dir, TRAINABLE_TABLE), ".txt") as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(trainable_table + "\n")
    write_json_atomic(os.path.join(output_dir, OPTIMIZER_GROUPS),
                      describe_param_groups(optimizer, handed_groups, names_by_id))


def describe_param_groups(optimizer: HoldsParamGroups, handed_groups: list[dict], names_by_id: dict) -> list[dict]:
    """What the optimizer really holds, per group: lr, weight decay, betas, plus its tensors.

    lr/weight_decay/betas are read back from the (possibly DeepSpeed-wrapped) optimizer; the
    tensor list comes from the groups handed over, since ZeRO replaces a group's params by
    flat partitions. Groups are matched by their "name".
    """
    handed = {group["name"]: group for group in handed_groups}
    rows = []
    for group in optimizer.param_groups:
        tensors = handed.get(group.get("name"), {}).get("params", [])
        rows.append({
            "name": group.get("name"),
            "lr": group["lr"],
            "weight_decay": group.get("weight_decay"),
            "betas": list(group.get("betas", ())),
            "eps": group.get("eps"),
            "tensors": [names_by_id[id(p)] for p in tensors],
            "numel": sum(getattr(p, "ds_numel", p.numel()) for p in tensors),
        })
    return rows
