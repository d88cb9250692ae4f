#!/usr/bin/env bash
# Stage 2 (visual instruction tuning) in any --tune_mode, from the stage-1 connector.
# Defaults are LLaVA-1.5-7B's recipe (LLaVA-665K mix, global batch 128, 1 epoch, cosine, 3% warmup,
# bf16, ZeRO-3, pad aspect ratio, modality-grouped batches) with per-mode learning rates:
#   full, attn_qv, attn_mlp   LR 2e-5 (LLaVA-1.5 full finetuning)
#   lora                      LR 2e-4 on LoRA r=128/alpha=256, MM_PROJECTOR_LR 2e-5 (LLaVA-1.5 LoRA)
#   ln                        LR 2e-5 (connector, embeddings, head), NORM_LR 1e-3
#   ln_simple                 NORM_LR 1e-3
#   connector                 LR 2e-5
# Norm-only tuning wants rates far above 2e-5 (the paper's author uses 5e-2 in PEFT's LN-tuning
# example) and is sensitive to them: NORM_LR is a starting point to sweep, not a tuned value.
#
#   TUNE_MODE=ln MODEL=/models/vicuna-7b-v1.5 ADAPTER=./checkpoints/llava-ln-vicuna-7b-pretrain \
#   bash scripts/finetune.sh --report_to wandb
#
# ADAPTER is the stage-1 run folder or its trained.safetensors (LLaVA's mm_projector.safetensors works
# too). DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

TUNE_MODE=${TUNE_MODE:-ln}
MODEL=${MODEL:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
ADAPTER=${ADAPTER:-./checkpoints/llava-ln-vicuna-7b-pretrain}
DATA=${DATA:-./playground/data/llava_v1_5_mix665k.json}
IMAGES=${IMAGES:-./playground/data}
OUTPUT=${OUTPUT:-./checkpoints/llava-ln-vicuna-7b-${TUNE_MODE}}
ZERO=${ZERO:-zero_configs/zero3.json}
TEMPLATE=${TEMPLATE:-vicuna_v1}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
PER_DEVICE=${PER_DEVICE:-16}
EPOCHS=${EPOCHS:-1}

case "$TUNE_MODE" in
    full|attn_qv|attn_mlp|connector) LR=${LR:-2e-5} ;;
    lora) LR=${LR:-2e-4}; MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-2e-5} ;;
    ln|ln_simple) LR=${LR:-2e-5}; NORM_LR=${NORM_LR:-1e-3} ;;
    *) echo "TUNE_MODE=$TUNE_MODE: use full, lora, ln, ln_simple, attn_qv, attn_mlp or connector" >&2; exit 2 ;;
esac

optional=()
[[ -n "${MM_PROJECTOR_LR:-}" ]] && optional+=(--mm_projector_lr "$MM_PROJECTOR_LR")
[[ -n "${NORM_LR:-}" ]] && optional+=(--norm_lr "$NORM_LR")
[[ "$TUNE_MODE" == lora ]] && optional+=(--lora_r "${LORA_R:-128}" --lora_alpha "${LORA_ALPHA:-256}")

ACCUM=$(accumulation "$GLOBAL_BATCH" "$PER_DEVICE")  # keeps the global batch for any GPU count

launch \
    --deepspeed "$ZERO" \
    --model_name_or_path "$MODEL" \
    --vision_tower "$VISION_TOWER" \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --pretrain_mm_mlp_adapter "$ADAPTER" \
    --data_path "$DATA" \
    --image_folder "$IMAGES" \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --conv_template "$TEMPLATE" \
    --tune_mode "$TUNE_MODE" \
    "${optional[@]}" \
    --bf16 True \
    --tf32 True \
    --output_dir "$OUTPUT" \
    --num_train_epochs "$EPOCHS" \
    --per_device_train_batch_size "$PER_DEVICE" \
    --gradient_accumulation_steps "$ACCUM" \
    --learning_rate "$LR" \
    --weight_decay 0.0 \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --save_steps 50000 \
    --save_total_limit 1 \
    --logging_steps 1 \
    "$@"
