#!/usr/bin/env bash
# VQAv2: generate, write vqav2_results.json; on val2014 score locally, on test-dev2015 write the EvalAI upload
# (vqav2_testdev_upload.json, covering every test2015 question id) to submit at eval.ai (challenge 830).
#   CKPT=./checkpoints/my-run DATA=./playground/data/eval/vqav2 SPLIT=test-dev2015 bash eval/vqav2.sh
# DATA holds v2_OpenEnded_mscoco_<SPLIT>_questions.json, v2_mscoco_val2014_annotations.json (val),
# v2_OpenEnded_mscoco_test2015_questions.json (test) and the image folder (val2014/ or test2015/).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DATA=${DATA:-./playground/data/eval/vqav2}
SPLIT=${SPLIT:-test-dev2015}
run_eval vqav2 --data "${DATA}" --split "${SPLIT}" "$@"
