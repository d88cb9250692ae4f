#!/usr/bin/env bash
# The paper's claims C1-C8 on the toy world, on a CPU: every tuning mode, the data, connector, learning-rate,
# epoch and seed variants, the analyses, and the verdict table (docs/paper_claims.md quotes its result).
#
#   bash scripts/reproduce_claims.sh            # OUT=claims_out; restartable: rerun after an interruption
#
# Sized for a 2-core machine (two runs at a time, one thread each). At 7B the same `llava-ln compare` and
# `llava-ln analyze` commands run on GPUs with --model_name_or_path/--vision_tower/--data_path/
# --stage1_data_path/--eval_data (or --pretrain_mm_mlp_adapter) instead of --world, and
# --train_args '--bf16 --deepspeed zero_configs/zero3.json --gradient_checkpointing' (docs/paper_claims.md).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-claims_out}
LLAVA_LN=${LLAVA_LN:-llava-ln}
PYTHON=${PYTHON:-python}
SCALE=${SCALE:-0.5}            # the toy world's size: 0.5 halves the evaluation sets (200 VQA, 450 POPE questions)
STAGE1_STEPS=${STAGE1_STEPS:-150}
STEPS=${STEPS:-120}            # stage-2 optimizer steps of every run (batch 16)
EQUAL=${EQUAL:-300}            # records per data type in the C4 runs (all of the detail set at scale 0.5)
PARALLEL=${PARALLEL:-2}
THREADS=${THREADS:-1}

started=$(date +%s)
[[ -f "$OUT/world/toy_world.json" ]] || $LLAVA_LN toy --out "$OUT/world" --seed 0 --scale "$SCALE"

# Variants: C4 data types at equal counts, C5 LN + connector without embeddings/head, C8 learning rates
# (x0.1 and x10 of the recipe's headline rate, for ln and for full as the reference) and twice the steps,
# and ln and full again with another seed: their differences set the noise margin of every verdict.
VARIANTS="conversation=ln data=conversation:$EQUAL; detail=ln data=detail:$EQUAL; reasoning=ln data=reasoning:$EQUAL"
VARIANTS+="; ln_connector=ln tune_embeddings=false"
VARIANTS+="; ln_lr_low=ln lr=1e-3; ln_lr_high=ln lr=1e-1; full_lr_low=full lr=1e-4; full_lr_high=full lr=1e-2"
VARIANTS+="; ln_long=ln steps=$((2 * STEPS)); ln_seed1=ln seed=1; full_seed1=full seed=1"

$LLAVA_LN compare --world "$OUT/world" --output_dir "$OUT/compare" \
    --stage1_steps "$STAGE1_STEPS" --stage2_steps "$STEPS" --variants "$VARIANTS" \
    --curve_steps 0.5 --curve_limit 32 --parallel "$PARALLEL" --threads "$THREADS"

runs="$OUT/compare"
$LLAVA_LN analyze --output_dir "$OUT/analysis" --num_samples 64 \
    --checkpoints "ln=$runs/ln/run,full=$runs/full/run,lora=$runs/lora/run,ln_simple=$runs/ln_simple/run,ln_seed1=$runs/ln_seed1/run" \
    --data "$OUT/world/data/instruct_conversation.json" --image_folder "$OUT/world/images"

$PYTHON -m llava_ln.experiments.claims --comparison "$runs/comparison.json" \
    --analysis "$OUT/analysis/analysis.json" | tee "$OUT/claims.md"
echo "total: $(( $(date +%s) - started )) s (this invocation)"
