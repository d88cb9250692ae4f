#!/usr/bin/env bash
# Stage 1 (feature alignment): train the connector alone on image-caption pairs, "plain" template.
# Defaults are LLaVA-1.5-7B's recipe (Vicuna-7B v1.5 + CLIP ViT-L/14-336, mlp2x_gelu, LLaVA-558K,
# global batch 256, lr 1e-3, 1 epoch, cosine, 3% warmup, ZeRO-2, bf16). Every upper-case variable
# can be set from the environment; extra arguments are passed on to llava_ln/train.py:
#
#   MODEL=/models/vicuna-7b-v1.5 DATA=/data/blip_laion_cc_sbu_558k.json IMAGES=/data/558k_images \
#   bash scripts/pretrain.sh --report_to wandb
#
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

MODEL=${MODEL:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA=${DATA:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGES=${IMAGES:-./playground/data/LLaVA-Pretrain/images}
OUTPUT=${OUTPUT:-./checkpoints/llava-ln-vicuna-7b-pretrain}
ZERO=${ZERO:-zero_configs/zero2.json}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}
PER_DEVICE=${PER_DEVICE:-32}
LR=${LR:-1e-3}
EPOCHS=${EPOCHS:-1}

ACCUM=$(accumulation "$GLOBAL_BATCH" "$PER_DEVICE")  # keeps the global batch for any GPU count

launch \
    --deepspeed "$ZERO" \
    --model_name_or_path "$MODEL" \
    --vision_tower "$VISION_TOWER" \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --data_path "$DATA" \
    --image_folder "$IMAGES" \
    --conv_template plain \
    --tune_mode connector \
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
    --save_steps 24000 \
    --save_total_limit 1 \
    --logging_steps 1 \
    "$@"
