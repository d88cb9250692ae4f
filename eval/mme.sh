#!/usr/bin/env bash
# MME: generate with LLaVA-1.5's prompt, write the eval tool's <subtask>.txt files, score (Perception, Cognition).
#   CKPT=./checkpoints/my-run DATA=./playground/data/eval/MME bash eval/mme.sh
# DATA holds MME_Benchmark_release_version/ (or is that folder).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DATA=${DATA:-./playground/data/eval/MME}
run_eval mme --data "${DATA}" "$@"
