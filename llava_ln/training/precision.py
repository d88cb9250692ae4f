"""Mixed precision policy: frozen weights in the compute dtype, trainable weights in fp32.

Frozen weights need no master copy, so under --bf16 they stay bf16 (half the memory); the
trainable ones are fp32 so the optimizer updates them without rounding, and autocast runs
the matmuls in bf16. On a CPU every run is fp32 (the flags are reported and ignored), so a
launch script written for GPUs also runs, slowly but identically, on a laptop or in tests.
DeepSpeed applies the same policy itself (bf16 module, fp32 master partitions).
"""
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    compute_dtype: torch.dtype  # dtype of frozen weights and of autocast
    bf16: bool
    fp16: bool

    @property
    def autocast(self) -> bool:
        return self.compute_dtype != torch.float32

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def resolve_precision(args, device: torch.device) -> Precision:
    if device.type != "cuda":
        if args.bf16 or args.fp16:
            logger.warning("no CUDA device: --bf16/--fp16 ignored, training in fp32")
        return Precision(torch.float32, False, False)
    if args.tf32 is not None:
        # Only affects fp32 matmuls (the connector's and the master-weight ones under autocast).
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    if args.bf16:
        return Precision(torch.bfloat16, True, False)
    if args.fp16:
        return Precision(torch.float16, False, True)
    return Precision(torch.float32, False, False)


def make_trainable_fp32(model) -> None:
    """Give every trainable parameter an fp32 master (frozen ones keep their dtype)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
