"""Multi-node runs: every rank must see the same OUTPUT_DIR and resume from the same checkpoint.

Rank 0 writes checkpoints and the run folder; on resume every rank reads the checkpoint's state
(each rank sets its own partitions from the full, name-keyed tensors). With OUTPUT_DIR on storage
that only one node sees, the other nodes would fail to find the checkpoint, or worse, find an older
one of their own under `latest` and resume from a different step. Both are caught before any model
is built, identically on every rank (no rank waits on one that gave up):

  * rank 0 writes a marker file with a fresh name into OUTPUT_DIR; every rank must see it;
  * every rank must resolve --resume_from_checkpoint (`latest` included) to the same folder, holding
    the same trainer state.
"""
import hashlib
import os
import socket
import uuid

from llava_ln.core.atomic import TMP_PREFIX
from llava_ln.core.distributed import all_gather_objects, barrier, broadcast_object
from llava_ln.core.errors import LlavaLnError


def _state_digest(resume_dir: str | None) -> str | None:
    if not resume_dir:
        return None
    path = os.path.join(resume_dir, "resume", "trainer_state.json")
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]
    except OSError:
        return "unreadable"


def check_shared_output_dir(output_dir: str, resume_dir: str | None, context) -> None:
    """Collective; raises on every rank when some rank sees another OUTPUT_DIR or another checkpoint."""
    if not context.distributed or context.world_size == 1:
        return
    # Named as a temporary: a launch killed before removing it leaves one that the next start cleans up.
    marker = os.path.join(output_dir, f"{TMP_PREFIX}shared-{broadcast_object(context, uuid.uuid4().hex)}")
    if context.is_main:
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write("rank 0 of this launch wrote this; every rank must see it\n")
    barrier(context)
    seen = all_gather_objects(context, {
        "host": socket.gethostname(), "sees_marker": os.path.exists(marker),
        "resume": os.path.basename(os.path.normpath(resume_dir)) if resume_dir else None, "state": _state_digest(resume_dir)})
    barrier(context)
    if context.is_main:
        os.remove(marker)
    blind = [f"rank {rank} on {view['host']}" for rank, view in enumerate(seen) if not view["sees_marker"]]
    if blind:
        raise LlavaLnError(f"--output_dir {output_dir} is not shared storage: {', '.join(blind[:3])} cannot see the "
                           "file rank 0 wrote there; put it on storage every node mounts at the same path")
    first = seen[0]
    for rank, view in enumerate(seen):
        if (view["resume"], view["state"]) != (first["resume"], first["state"]):
            raise LlavaLnError(f"--resume_from_checkpoint: rank {rank} on {view['host']} resolves it to "
                               f"{view['resume']} (state {view['state']}), rank 0 to {first['resume']} "
                               f"(state {first['state']}); every rank must resume from the same checkpoint")
