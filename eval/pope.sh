#!/usr/bin/env bash
# POPE: answer the random / popular / adversarial splits, write one answer file per split, score (F1 per split, mean F1).
#   CKPT=./checkpoints/my-run DATA=./playground/data/eval/pope bash eval/pope.sh
# DATA holds coco/coco_pope_{random,popular,adversarial}.json and val2014/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DATA=${DATA:-./playground/data/eval/pope}
run_eval pope --data "${DATA}" "$@"
