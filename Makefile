# Two entry points, each working from a fresh clone: `make demo` and `make test`.
# Everything installs into ./.venv (VENV=/path/to/env uses another environment). An environment that already
# has torch keeps it; without one, scripts/install_torch.py installs TORCH_VERSION, the CPU build on a Linux
# box without an NVIDIA driver (pip's default there is the multi-GB CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llava-ln-installed
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: setup test test-faults demo lint clean

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) scripts/install_torch.py --version $(TORCH_VERSION)
	@echo "[setup] installing llava-ln and its extras (train, eval, demo, dev, quant) into $(VENV)"
	$(PY) -m pip install --progress-bar on -e ".[train,eval,demo,dev,quant]"
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
