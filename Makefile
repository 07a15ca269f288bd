# Every target sets up its own virtualenv first (idempotent), so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minigpt-installed
# Without an NVIDIA GPU, pin the CPU-only torch wheel first so pip never pulls a multi-GB CUDA build.
# Elsewhere, point pip at PyTorch's CPU index: make setup TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_CPU ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH_CPU)"; fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## train on the default offline corpus, then print samples
	$(VENV)/bin/minigpt train

test: $(STAMP)  ## the fast suite (includes one real train -> generate -> inspect run)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## everything but the GPU tests, slow ones included
	$(PY) -m pytest -q -m 'not gpu'

bench: $(STAMP)
	$(PY) bench/bench_lightning_overhead.py
	$(PY) bench/bench_sample.py

clean:
	rm -rf $(VENV) runs
