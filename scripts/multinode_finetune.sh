#!/usr/bin/env bash
# Stage 2 on several nodes: run this on the first node of the hostfile (passwordless ssh to the
# others, pdsh installed, same paths everywhere). The global batch stays 128 (accumulation is
# recomputed), so the recipe does not change with the node count.
#
#   HOSTFILE=scripts/hostfile NUM_NODES=2 NUM_GPUS=8 TUNE_MODE=ln bash scripts/multinode_finetune.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HOSTFILE=${HOSTFILE:-scripts/hostfile}
export NUM_NODES=${NUM_NODES:-2}
export NUM_GPUS=${NUM_GPUS:-8}
[[ -f "$HOSTFILE" ]] || { echo "no hostfile at $HOSTFILE (copy scripts/hostfile.example)" >&2; exit 2; }
exec bash scripts/finetune.sh "$@"
