"""Progress and metrics, rank 0 only: a tqdm bar (loss, lr, grad norm, tokens/s), log.jsonl,
and TensorBoard or Weights & Biases through --report_to.

log.jsonl gets one JSON object per logging step, so a run's curve can be read without any
logger installed (the tests compare runs through it).
"""
import json
import logging
import os
import time

from llava_ln.core.errors import LlavaLnError
from llava_ln.training.args import report_targets

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"


class Reporter:
    def __init__(self, args, context, total_steps: int, start_step: int, config: dict):
        self.enabled = context.is_main
        self.output_dir = args.output_dir
        self.bar = None
        self.writers = []
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
        """metrics: loss, lr, grad_norm, tokens (since the last log) and anything else numeric."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self.interval_start, 1e-9)
        self.interval_start = now
        record = {"step": step, **metrics}
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

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for writer in self.writers:
            closer = getattr(writer, "close", None)
            if closer:
                closer()


def _open_writer(target: str, args, config: dict):
    if target == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LlavaLnError("--report_to tensorboard needs the tensorboard package "
                               "(pip install 'llava-ln[train]')") from None
        board = SummaryWriter(log_dir=args.logging_dir or os.path.join(args.output_dir, "runs"))
        board.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

        class TensorBoardWriter:
            def __call__(self, step, record):
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        board.add_scalar(f"train/{key}", value, step)

            def close(self):
                board.close()

        return TensorBoardWriter()
    try:
        import wandb
    except ImportError:
        raise LlavaLnError("--report_to wandb needs the wandb package (pip install wandb)") from None
    run = wandb.init(name=args.run_name, config=config, dir=args.output_dir)

    class WandbWriter:
        def __call__(self, step, record):
            run.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)

        def close(self):
            run.finish()

    return WandbWriter()
