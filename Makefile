# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_BENCH := $(VENV)/.installed-bench

.PHONY: run test check format bench

# Installs (again) only when pyproject.toml changes; pip's own cache keeps rebuilds cheap.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Sovereign needs Python 3.11 or newer.")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# The benchmarks also need llama-cpp-python's own server, to measure against.
$(INSTALLED_BENCH): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	@touch $@

run: $(INSTALLED)
	$(BIN)/python manage.py run

test: $(INSTALLED)
	$(BIN)/python -m pytest

# By hand, on a quiet machine: each script rewrites its section of docs/benchmarks.md.
bench: $(INSTALLED_BENCH)
	$(BIN)/python bench/brokers.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/wallet.py

check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
