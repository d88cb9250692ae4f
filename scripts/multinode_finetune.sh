#!/usr/bin/env bash
# Stage 2 on several nodes. The global batch stays 128 (accumulation is recomputed from NUM_NODES x
# NUM_GPUS), so the recipe does not change with the node count. Every node needs the same checkout,
# the same virtual environment and the data at the same paths, and OUTPUT on storage every node
# mounts at the same path: rank 0 writes checkpoints there and, on resume, every rank reads them (a
# run checks this at start: an OUTPUT_DIR another node cannot see, or a `latest` that resolves to
# different checkpoints on different nodes, stops every rank with one line).
#
# Two ways to start it, both with a DeepSpeed hostfile (scripts/hostfile.example: one
# "<host> slots=<GPUs>" line per node, in node-rank order):
#
#   * ssh: run once, on the first node; the launcher reaches the others with pdsh over
#     passwordless ssh.
#       HOSTFILE=scripts/hostfile NUM_NODES=2 NUM_GPUS=8 TUNE_MODE=ln bash scripts/multinode_finetune.sh
#
#   * no ssh (SLURM, Kubernetes, or nodes without pdsh): run the same command once on every node,
#     each with its NODE_RANK, all with the first node's address (DeepSpeed's --no_ssh mode).
#       HOSTFILE=scripts/hostfile NUM_NODES=2 NUM_GPUS=8 NODE_RANK=$SLURM_NODEID MASTER_ADDR=node-a \
#       TUNE_MODE=ln bash scripts/multinode_finetune.sh
#
# Resume after a failure by starting it the same way with `--resume_from_checkpoint latest` (extra
# arguments go to train.py); any number of nodes and GPUs may resume a checkpoint (the global batch
# must stay the same; dropout's random streams start afresh when the rank count changed).
set -euo pipefail
cd "$(dirname "$0")/.."
export HOSTFILE=${HOSTFILE:-scripts/hostfile}
export NUM_NODES=${NUM_NODES:-2}
export NUM_GPUS=${NUM_GPUS:-8}
[[ -f "$HOSTFILE" ]] || { echo "no hostfile at $HOSTFILE (copy scripts/hostfile.example)" >&2; exit 2; }
exec bash scripts/finetune.sh "$@"
