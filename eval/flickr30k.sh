#!/usr/bin/env bash
# Flickr30k captioning (Karpathy test): one caption per image, COCO results JSON, scored by pycocoevalcap (needs Java).
#   CKPT=./checkpoints/my-run DATA=./playground/data/eval/flickr30k bash eval/flickr30k.sh
# DATA holds flickr30k_karpathy_test_gt.json (COCO format) and flickr30k-images/.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DATA=${DATA:-./playground/data/eval/flickr30k}
run_eval flickr30k --data "${DATA}" "$@"
