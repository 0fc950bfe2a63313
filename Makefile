# Two commands do all set-up on a fresh machine: `make demo` and `make test` (README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take this wheel (on this project's machines it lies on local disk). A GPU machine
# installs its CUDA build of torch into the venv first (or sets TORCH_SPEC); the range in
# pyproject.toml accepts it and pip keeps it.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist): 0 runs the suite in one process. Three on a 2-core machine: many
# tests wait on a worker, a server or a browser they started, and a third process fills that
# wait (measured side by side in docs/development.md).
TEST_WORKERS ?= 3
# `make test-quick`: everything but the slow families, and one test of each of those.
QUICK_MARKS := (not slow and not broker and not browser) or quick

.PHONY: install messages demo test test-quick lint bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

# Japanese UI strings: compiled from locale/*.po (needs gettext's msgfmt).
messages: install
	@if command -v msgfmt >/dev/null; then \
		cd locale && ../$(PY) ../manage.py compilemessages -l ja -v 0; \
	else \
		echo "msgfmt not found (apt-get install gettext): the UI stays in English"; \
	fi

demo: messages
	bash scripts/demo.sh

# Bytecode caches on for the tests (gitignored __pycache__): without them pytest rewrites every
# test module, and every module of its plugins (schemathesis has hundreds), on each run.
PYTEST := PYTHONDONTWRITEBYTECODE= $(PY) -m pytest

test: messages
	$(PYTEST) -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The edit-test loop: every kind of check the full suite makes, one representative of each slow
# family (real worker, kill -9, training, browser, served model); `make test` runs them all.
test-quick: messages
	$(PYTEST) -n $(TEST_WORKERS) -m "$(QUICK_MARKS)" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/generation.py
	$(PY) bench/ranking.py
	$(PY) bench/finetune.py
	$(PY) bench/judge.py
