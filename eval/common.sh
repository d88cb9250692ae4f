#!/usr/bin/env bash
# Shared by the eval/*.sh scripts: GPU count detection and the launcher for `llava-ln eval`.
#   GPUS    number of processes (default: the visible GPUs; 0 or 1 runs one plain process)
#   CKPT    checkpoint: a training OUTPUT_DIR, a merged folder or a transformers LLaVA folder
#   OUT     where answers and official result files go (default: ./eval_results/<ckpt name>/<benchmark>)
# Extra arguments to a script are passed on to `llava-ln eval` (e.g. --batch_size 32 --num_beams 3).
set -euo pipefail

count_gpus() {
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        # An explicit device list decides, as it does for torch: set but empty hides every GPU.
        echo "${CUDA_VISIBLE_DEVICES}" | tr ',' '\n' | grep -c . || true
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

GPUS=${GPUS:-$(count_gpus)}
CKPT=${CKPT:?set CKPT to the checkpoint folder, e.g. CKPT=./checkpoints/llava-ln-vicuna-7b}

# run_eval BENCHMARK [llava-ln eval flags...]: one process per GPU, questions split across them.
run_eval() {
    local benchmark=$1
    shift
    local out=${OUT:-./eval_results/$(basename "${CKPT%/}")/${benchmark}}
    if [ "${GPUS}" -gt 1 ]; then
        torchrun --standalone --nproc_per_node "${GPUS}" -m llava_ln.cli eval \
            --benchmark "${benchmark}" --model_path "${CKPT}" --output_dir "${out}" --score "$@"
    else
        llava-ln eval --benchmark "${benchmark}" --model_path "${CKPT}" --output_dir "${out}" --score "$@"
    fi
    echo "scores: ${out}/scores.json" >&2
}
