"""Process-group setup for every launcher (python, torchrun, deepspeed), and small collectives.

Launchers announce themselves through the environment (RANK, WORLD_SIZE, LOCAL_RANK, and
`--local_rank` from the deepspeed launcher). CUDA gets NCCL; a CPU gets gloo, also under
DeepSpeed, whose CPU accelerator would otherwise pick oneCCL. A single `python` process
with --deepspeed gets a one-rank gloo/NCCL group so ZeRO runs unchanged. Whatever this
module initialised for plain PyTorch it also tears down, so a test can run several trainings in
one process; a group DeepSpeed used stays up, since DeepSpeed keeps references to it.
"""
import datetime
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: no process group (single process, plain PyTorch)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_device(use_cpu: bool, local_rank: int) -> torch.device:
    if torch.cuda.is_available() and not use_cpu:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextmanager
def distributed_session(use_deepspeed: bool, use_cpu: bool = False, local_rank_flag: int = -1):
    """Yield a DistContext; initialise a process group when launched distributed or under DeepSpeed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", max(local_rank_flag, 0)))
    device = pick_device(use_cpu, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    needs_group = world_size > 1 or use_deepspeed
    created = False
    if needs_group and not dist.is_initialized():
        if "RANK" not in os.environ:
            # Plain `python` with --deepspeed: a group of one. The variables stay set, as the group does.
            for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                                   MASTER_PORT=str(_free_port())).items():
                os.environ.setdefault(key, value)
        timeout = datetime.timedelta(minutes=30)
        if use_deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
        created = True
    grouped = needs_group and dist.is_initialized()
    rank = dist.get_rank() if grouped else 0
    world = dist.get_world_size() if grouped else 1
    context = DistContext(rank, world, local_rank, device, backend if grouped else None)
    try:
        yield context
    finally:
        # DeepSpeed caches process groups for the life of the process, so a group it used stays up
        # (a later deepspeed.initialize in the same process reuses it); a plain one is torn down.
        if created and not use_deepspeed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum(context: DistContext, values: list[float]) -> list[float]:
    """Sum a few floats over ranks (float64, on the collective's device)."""
    if not context.distributed:
        return list(values)
    device = context.device if context.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(context: DistContext, obj) -> list:
    """Every rank's obj, in rank order (small Python objects only: RNG states, counters)."""
    if not context.distributed:
        return [obj]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(context: DistContext, obj):
    """Rank 0's obj on every rank."""
    if not context.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
