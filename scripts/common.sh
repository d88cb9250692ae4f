# Shared by pretrain.sh and finetune.sh: GPU/node counts, accumulation from the global batch, the launcher.
# Sourced, not run. Inputs (environment): NUM_GPUS, NUM_NODES, HOSTFILE, NODE_RANK, MASTER_ADDR,
# MASTER_PORT, LAUNCHER_ARGS, DRY_RUN.

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
# With HOSTFILE and NODE_RANK set, the launcher starts only this node's ranks (DeepSpeed's --no_ssh mode):
# the same command runs once on every node (NODE_RANK 0..NUM_NODES-1), all pointing at MASTER_ADDR.
launch() {
    local cmd=(deepspeed)
    if [[ -n "${HOSTFILE:-}" ]]; then
        cmd+=(--hostfile "$HOSTFILE" --num_nodes "$NUM_NODES")
        if [[ -n "${NODE_RANK:-}" ]]; then
            cmd+=(--no_ssh --node_rank "$NODE_RANK" --master_addr "${MASTER_ADDR:?NODE_RANK needs MASTER_ADDR (node 0)}")
        elif [[ -n "${MASTER_ADDR:-}" ]]; then
            cmd+=(--master_addr "$MASTER_ADDR")
        fi
    fi
    if [[ -n "${LAUNCHER_ARGS:-}" ]]; then  # more deepspeed launcher flags, e.g. "--ssh_port 2222"
        local extra
        read -r -a extra <<< "$LAUNCHER_ARGS"
        cmd+=("${extra[@]}")
    fi
    cmd+=(--num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" llava_ln/train.py "$@")
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        echo
    else
        exec "${cmd[@]}"
    fi
}
