#!/usr/bin/env bash
# Fill the ignored folder .wheels/ with what the lent GPU image (Python 3.12, manylinux x86_64, torch 2.11,
# transformers 5.17, peft; no internet) lacks for bench/gpu_suite.sh.
#
#   bash bench/prepare_gpu_wheels.sh            # run once on a machine that reaches PyPI, before the device call
#   WHEELS=.wheels WITH_BNB=0 bash bench/prepare_gpu_wheels.sh
#
# What the image lacks (checked against the device's package list): deepspeed and, of its requirements,
# hjson and pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions >= 4.16, which
# pydantic needs and the image may hold older); liger-kernel for later GPU checks. bitsandbytes (also for
# later checks) ships CUDA binaries for many toolkits and is the largest: WITH_BNB=0 leaves it out if the
# folder has to stay small. Everything is one pinned version each (two versions of one package stop the
# install), fetched as binaries for CPython 3.12 only; nothing here is installed into this machine's venv.
#
# DeepSpeed is published as an sdist only: it is built here into a py3-none-any wheel with no compiled ops
# (DS_BUILD_OPS=0; the suite's configs need none on CUDA), by the venv's Python without build isolation,
# since its setup.py imports torch and an isolated build would fetch a CUDA torch.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$REPO/.wheels}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
WITH_BNB="${WITH_BNB:-1}"

# Versions: deepspeed as in the project's venv (so the GPU runs what the CPU tests run), its helpers at the
# versions the venv resolved, liger-kernel and bitsandbytes at their latest releases when this was written.
VENV_DEEPSPEED="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
DEEPSPEED_VERSION="${DEEPSPEED_VERSION:-$VENV_DEEPSPEED}"
PURE=(hjson==3.1.0 pydantic==2.14.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
      liger-kernel==0.8.5)
BINARY=(pydantic-core==2.50.5)
[ "$WITH_BNB" = 1 ] && BINARY+=(bitsandbytes==0.50.2)

mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl
PLATFORMS=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
           manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
TARGET=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)

quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }  # this box's local indexes
"$PYTHON" -m pip download -q "${TARGET[@]}" "${PLATFORMS[@]}" --platform any -d "$WHEELS" "${PURE[@]}" 2> >(quiet)
"$PYTHON" -m pip download -q "${TARGET[@]}" "${PLATFORMS[@]}" -d "$WHEELS" "${BINARY[@]}" 2> >(quiet)

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-cache-dir --no-deps --no-build-isolation --no-binary deepspeed \
  -w "$build" "deepspeed==$DEEPSPEED_VERSION" 2> >(quiet)
cp "$build"/deepspeed-*-py3-none-any.whl "$WHEELS"/


names="$(ls "$WHEELS"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort)"
if [ -n "$(printf '%s\n' "$names" | uniq -d)" ]; then
  echo "two versions of one package in $WHEELS: $(printf '%s\n' "$names" | uniq -d | tr '\n' ' ')" >&2
  exit 1
fi
ls -l "$WHEELS"
echo "total: $(du -sh "$WHEELS" | cut -f1) in $WHEELS (the device call carries at most 64 MiB with the working tree)"
