#!/usr/bin/env bash
# One command that checks the GPU path end to end on a lent GPU and prints one summary JSON.
#
#   bash bench/gpu_suite.sh              # on the GPU machine, with .wheels/ carried (bench/prepare_gpu_wheels.sh)
#   bash bench/gpu_suite.sh --dry_run    # the same steps on this CPU at tiny size, no wheel install
#   bash bench/gpu_suite.sh --quant      # instead: the quantized-base steps (bench/gpu_suite_quant.py)
#
# First installs what the GPU image lacks (DeepSpeed and its helpers into /tmp/site, liger-kernel and
# bitsandbytes into /tmp/site-extra) from WHEELS (default .wheels/, ignored by git), offline and without
# dependency resolution, then runs `python -m bench.gpu_suite_run`: toy world -> stage 1 -> stage 2 (ln) under
# DeepSpeed ZeRO-2 and ZeRO-3 with a mid-run checkpoint and a resume compared with the straight run ->
# batched eval (POPE, VQAv2) -> export to transformers (verified) -> 7B-shape throughput of every tune
# mode next to the plain transformers+PEFT baseline. Each step is timed and checked, and the suite goes
# on after a failed one. The summary goes to stdout (last line), WORK/gpu_suite.json and, when OUT is
# set, $OUT/gpu_suite.json with the raw throughput lines and an archive of every log. Exit status 0
# when every step passed.
#
# Environment: WHEELS (wheel folder), HF_PEFT_BASELINE (default: the repository's copy in
# bench/baseline/), SUITE_WORK (scratch folder, default a new /tmp folder), PYTHON (default python3),
# SUITE_BUDGET_S (the steps' time budget: 440 s on the GPU, which with the install keeps the suite
# under 8 minutes; later steps are skipped past it).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DRY_RUN=0
QUANT=0
for arg in "$@"; do
  case "$arg" in
    --dry_run|--dry-run) DRY_RUN=1 ;;
    --quant) QUANT=1 ;;  # the quantized-base steps instead of the usual ones (bench/gpu_suite_quant.py)
    *) echo "gpu_suite.sh: unknown argument $arg (--dry_run, --quant)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-$REPO/.wheels}"
WORK="${SUITE_WORK:-$(mktemp -d /tmp/gpu_suite.XXXXXX)}"
mkdir -p "$WORK/logs"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

run_args=(--work "$WORK")
[ -n "${SUITE_BUDGET_S:-}" ] && run_args+=(--budget_s "$SUITE_BUDGET_S")
[ "$QUANT" = 1 ] && run_args+=(--quant)
if [ "$DRY_RUN" = 1 ]; then
  run_args+=(--dry_run)
else
  # The device README's recipe: no index, no dependency resolution, into a folder put first on the path.
  # liger-kernel and bitsandbytes (for later GPU checks) go to a folder of their own that the steps do not
  # see, so that PEFT or transformers picking them up cannot change what the suite measures; only their
  # import is tried, and reported under "install".
  started=$(date +%s.%N)
  core=() extra=()
  shopt -s nullglob
  for wheel in "$WHEELS"/*.whl; do
    case "$(basename "$wheel")" in
      liger_kernel-*|bitsandbytes-*) extra+=("$wheel") ;;
      *) core+=("$wheel") ;;
    esac
  done
  shopt -u nullglob
  pip_install() { "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "$@"; }
  status=missing
  if [ "${#core[@]}" -gt 0 ]; then
    pip_install --target /tmp/site "${core[@]}" >"$WORK/logs/install.log" 2>&1
    status=$?
  fi
  if [ "${#extra[@]}" -gt 0 ]; then
    pip_install --target /tmp/site-extra "${extra[@]}" >>"$WORK/logs/install.log" 2>&1 || status="$status+extras"
  fi
  export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
  names=$(for w in "${core[@]}" "${extra[@]}"; do basename "$w"; done | sed 's/-py3.*\|-cp3.*//' | paste -sd, -)
  "$PYTHON" -m bench.gpu_suite_install "$WORK/install.json" "$status" "$started" "$names" /tmp/site-extra \
    2>>"$WORK/logs/install.log"
  run_args+=(--install "$WORK/install.json")
fi

exec "$PYTHON" -m bench.gpu_suite_run "${run_args[@]}"
