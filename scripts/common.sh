# Shared by pretrain.sh and finetune.sh: GPU/node counts, accumulation from the global batch, the launcher.
# Sourced, not run. Inputs (environment): NUM_GPUS, NUM_NODES, HOSTFILE, MASTER_PORT, DRY_RUN.

detect_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L | grep -c '^GPU' || echo 1; else echo 1; fi
}

NUM_GPUS=${NUM_GPUS:-$(detect_gpus)}
NUM_NODES=${NUM_NODES:-1}
MASTER_PORT=${MASTER_PORT:-29500}

# accumulation GLOBAL_BATCH PER_DEVICE: the accumulation steps that keep the global batch whatever the GPU count.
accumulation() {
    local ranks=$((NUM_GPUS * NUM_NODES))
    local per_step=$(($2 * ranks))
    if (($1 % per_step != 0)); then
        echo "global batch $1 is not a multiple of $2 per device x $ranks ranks; set PER_DEVICE or GLOBAL_BATCH" >&2
        exit 2
    fi
    echo $(($1 / per_step))
}

# launch ARGS...: the deepspeed launcher on this node (or every node of HOSTFILE); DRY_RUN=1 prints instead.
launch() {
    local cmd=(deepspeed)
    if [[ -n "${HOSTFILE:-}" ]]; then
        cmd+=(--hostfile "$HOSTFILE" --num_nodes "$NUM_NODES")
    fi
    cmd+=(--num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" llava_ln/train.py "$@")
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        echo
    else
        exec "${cmd[@]}"
    fi
}
