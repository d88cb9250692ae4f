# Two entry points, each working from a fresh clone: `make demo` and `make test`.
# Everything installs into ./.venv; torch is pinned to the CPU build found on local disk
# (a looser pin would pull a multi-GB CUDA wheel on a CPU-only box).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llava-ln-installed
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test test-faults demo lint clean

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[train,eval,demo,dev,quant]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The whole fault-injection suite (docs/reliability.md): make test runs its fast part; this adds the
# slow cases marked `faults` (2-rank DeepSpeed shards, resumes and trainings through the CLI).
test-faults: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) -m "faults or not faults" tests/reliability

demo: setup
	$(VENV)/bin/llava-ln demo

lint: setup
	$(VENV)/bin/ruff check llava_ln tests eval scripts bench

clean:
	rm -rf $(VENV) demo_out .pytest_cache
