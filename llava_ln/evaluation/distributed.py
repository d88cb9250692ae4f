"""Rank split and gathering for `llava-ln eval` under torchrun / the deepspeed launcher.

The launchers set RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT). Each rank generates a
strided share of the unanswered questions on its own device; answers travel as Python objects
over a gloo process group (no GPU collectives are needed, and gloo works on CPU-only machines
too), so rank 0 gathers everything in-process and writes the official files.
Without the launcher variables everything runs in this one process.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llava_ln.errors import LlavaLnError


@dataclass
class EvalWorld:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This rank's items: every world_size-th, starting at rank (balanced to within one)."""
        return items[self.rank::self.world_size]

    def broadcast(self, payload):
        """rank 0's payload, on every rank."""
        if self.world_size == 1:
            return payload
        box = [payload if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, payload) -> list | None:
        """Every rank's payload, in rank order, on rank 0 (None elsewhere)."""
        if self.world_size == 1:
            return [payload]
        boxes = [None] * self.world_size if self.is_main else None
        dist.gather_object(payload, boxes, dst=0)
        return boxes

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested not in ("auto", "cuda"):
        raise LlavaLnError(f"--device {requested!r} is not one of auto, cuda, cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "cuda":
        raise LlavaLnError("--device cuda: no CUDA device is available")
    return torch.device("cpu")


def setup_world(requested_device: str = "auto") -> EvalWorld:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = _pick_device(requested_device, local_rank)
    world = EvalWorld(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=rank, world_size=world_size)
        world.owns_group = True
    return world
