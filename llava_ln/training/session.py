"""Run housekeeping: per-rank logging, the output folder's state, resume-path resolution."""
import logging
import os

from llava_ln.checkpoint.manifest import MANIFEST_NAME
from llava_ln.core.distributed import barrier
from llava_ln.core.errors import LlavaLnError
from llava_ln.training.checkpointing import list_checkpoints
from llava_ln.training.reporting import LOG_FILE

logger = logging.getLogger(__name__)


def configure_logging(context) -> None:
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


def resolve_resume_dir(args) -> str | None:
    """--resume_from_checkpoint PATH, or `latest` (the newest checkpoint-<step> in OUTPUT_DIR)."""
    path = args.resume_from_checkpoint
    if not path:
        return None
    if path == "latest":
        found = list_checkpoints(args.output_dir)
        if not found:
            raise LlavaLnError(f"--resume_from_checkpoint latest: {args.output_dir} holds no checkpoint-<step>")
        return found[-1][1]
    if not os.path.isdir(path):
        raise LlavaLnError(f"--resume_from_checkpoint {path}: no such folder")
    return path


def prepare_output_dir(args, context) -> str | None:
    """Create OUTPUT_DIR; refuse to start a fresh run over an earlier one. Returns the resume folder."""
    resume_dir = resolve_resume_dir(args)
    # Every rank checks (same verdict everywhere), so no rank waits on one that gave up.
    earlier = os.path.exists(os.path.join(args.output_dir, MANIFEST_NAME)) or list_checkpoints(args.output_dir)
    if earlier and not resume_dir and not args.overwrite_output_dir:
        raise LlavaLnError(f"--output_dir {args.output_dir} already holds a run; pass --resume_from_checkpoint "
                           "(or `latest`) to continue it, or --overwrite_output_dir to start over")
    if context.is_main:
        os.makedirs(args.output_dir, exist_ok=True)
        log = os.path.join(args.output_dir, LOG_FILE)
        if not resume_dir and os.path.exists(log):
            os.remove(log)
    barrier(context)
    return resume_dir


def log_data_skips(dataset) -> None:
    report = getattr(dataset, "log_skip_summary", None)
    if callable(report):
        report()
