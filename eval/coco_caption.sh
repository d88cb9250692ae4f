#!/usr/bin/env bash
# COCO captioning (Karpathy test): one caption per image, COCO results JSON, scored by pycocoevalcap (needs Java).
#   CKPT=./checkpoints/my-run DATA=./playground/data/eval/coco_caption bash eval/coco_caption.sh
# DATA holds coco_karpathy_test_gt.json (COCO format) and val2014/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DATA=${DATA:-./playground/data/eval/coco_caption}
run_eval coco_caption --data "${DATA}" "$@"
