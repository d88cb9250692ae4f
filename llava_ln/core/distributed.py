"""Process-group setup for every launcher (python, torchrun, deepspeed), and the few collectives we use.

Launchers announce themselves through the environment (RANK, WORLD_SIZE, LOCAL_RANK, and
`--local_rank` from the deepspeed launcher). Training gets NCCL on CUDA and gloo on a CPU (also
under DeepSpeed, whose CPU accelerator would otherwise pick oneCCL); evaluation asks for gloo
everywhere, since it only moves Python objects. A single `python` process with --deepspeed gets
a one-rank group so ZeRO runs unchanged. Whatever this module initialised for plain PyTorch it
also tears down, so a test can run several trainings in one process; a group DeepSpeed used
stays up, since DeepSpeed keeps references to it, and is destroyed when the interpreter exits.
"""
import atexit
import datetime
import functools
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from llava_ln.core.errors import LlavaLnError
from llava_ln.core.processes import free_port

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True, kw_only=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: no process group (single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def share(self, items: list) -> list:
        """This rank's items: every world_size-th, starting at rank (balanced to within one)."""
        return items[self.rank::self.world_size]


def pick_device(requested: str, local_rank: int) -> torch.device:
    """`auto`: this rank's GPU when there is one, else the CPU; `cuda` insists on a GPU."""
    if requested not in DEVICE_CHOICES:
        raise LlavaLnError(f"--device {requested!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if requested != "cpu" and torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if requested == "cuda":
        raise LlavaLnError("--device cuda: no CUDA device is available")
    return torch.device("cpu")


@contextmanager
def distributed_session(device: str = "auto", use_deepspeed: bool = False, local_rank_flag: int = -1,
                        backend: str | None = None):
    """Yield a DistContext; initialise a process group when launched distributed or under DeepSpeed.

    backend: None picks NCCL on CUDA and gloo on a CPU; evaluation passes "gloo" (objects only).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", max(local_rank_flag, 0)))
    chosen_device = pick_device(device, local_rank)
    backend = backend or ("nccl" if chosen_device.type == "cuda" else "gloo")
    needs_group = world_size > 1 or use_deepspeed
    created = False
    if needs_group and not dist.is_initialized():
        if "RANK" not in os.environ:
            # Plain `python` with --deepspeed: a group of one. The variables stay set, as the group does.
            for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                                   MASTER_PORT=str(free_port())).items():
                os.environ.setdefault(key, value)
        timeout = datetime.timedelta(minutes=30)
        if use_deepspeed:
            import deepspeed

            if chosen_device.type == "cpu":
                skip_deepspeed_shared_memory_op()
            deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
            destroy_process_group_at_exit()
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
        created = True
    grouped = needs_group and dist.is_initialized()
    rank = dist.get_rank() if grouped else 0
    world = dist.get_world_size() if grouped else 1
    context = DistContext(rank=rank, world_size=world, local_rank=local_rank, device=chosen_device,
                          backend=dist.get_backend() if grouped else None)
    # DeepSpeed caches process groups for the life of the process, so a group it used stays up
    # (a later deepspeed.initialize in the same process reuses it); a plain one is torn down.
    tear_down = created and not use_deepspeed
    try:
        yield context
    except BaseException:
        # No barrier on the way out of an error: the other ranks may never reach one.
        if tear_down and dist.is_initialized():
            dist.destroy_process_group()
        raise
    if tear_down and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@functools.cache  # one hook per process, however many sessions start
def destroy_process_group_at_exit() -> None:
    """Destroy the default process group before the interpreter finalizes.

    A gloo group still alive at interpreter shutdown can abort the process (SIGABRT, "terminate called
    without an active exception") after all work is done: its worker threads release tensors that
    need the Python runtime, which is already gone. Destroying it is local to the rank (no collective),
    so a rank that exits early cannot make another hang here.
    """
    atexit.register(_destroy_if_initialized)


def _destroy_if_initialized() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def skip_deepspeed_shared_memory_op() -> None:
    """Keep DeepSpeed's CPU backend from JIT-compiling its shared-memory all-reduce op.

    The op only serves DeepSpeed's inference all-reduce; training's collectives go through gloo
    either way. Building it costs a minute of compiling on the first CPU launch, a 69 MB
    /dev/shm buffer per rank that DeepSpeed never frees, and a build lock under
    ~/.cache/torch_extensions that a process killed at the wrong moment leaves behind, after
    which every later launch waits on it forever.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum(context: DistContext, values: list[float]) -> list[float]:
    """Sum a few floats over ranks (float64, on the collective's device)."""
    if not context.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(context))
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_sum_int64(context: DistContext, values: np.ndarray) -> np.ndarray:
    """Sum an int64 array over ranks, element by element (exact; on the collective's device)."""
    if not context.distributed:
        return values
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)).to(_collective_device(context))
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def _collective_device(context: DistContext) -> torch.device:
    """Where a tensor collective runs: the rank's GPU under NCCL, else the CPU (gloo)."""
    return context.device if context.backend == "nccl" else torch.device("cpu")


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
    box = [obj if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(context: DistContext, obj) -> list | None:
    """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
    if not context.distributed:
        return [obj]
    boxes = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, boxes, dst=0)
    return boxes
