# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_BENCH := $(VENV)/.installed-bench
# axe-core, the accessibility checker the browser tests run on every dashboard page.
AXE := $(VENV)/node/node_modules/axe-core/axe.min.js
AXE_VERSION := 4.11.1
# The StartOS package's SDK and TypeScript, which tests/packaging/test_startos.py runs.
STARTOS_MODULES := startos/node_modules/.installed

.PHONY: run test check format bench rebuild-llama lint-umbrel release

# Installs (again) only when pyproject.toml or the llama.cpp build changes. llama-cpp-python is
# compiled portable as in the image (nothing from this processor, a CPU library per processor
# generation, none with Intel AMX code), and its wheel kept under a key of the mode, flags and
# compiler (sovereign/llama_build.py says why pip's cache is not used).
$(INSTALLED): pyproject.toml sovereign/llama_build.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Sovereign needs Python 3.11 or newer.")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python sovereign/llama_build.py --venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

# Builds llama-cpp-python from source again, ignoring the kept wheel.
rebuild-llama: $(INSTALLED)
	$(BIN)/python sovereign/llama_build.py --venv $(VENV) --rebuild

# The benchmarks also need llama-cpp-python's own server, to measure against.
$(INSTALLED_BENCH): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	@touch $@

run: $(INSTALLED)
	$(BIN)/python manage.py run

$(AXE):
	npm install --no-save --no-audit --no-fund --prefix $(VENV)/node axe-core@$(AXE_VERSION)

# Installs (again) only when the package's lock file changes; npm ci starts from scratch.
$(STARTOS_MODULES): startos/package.json startos/package-lock.json
	cd startos && npm ci --no-audit --no-fund
	@touch $@

test: $(INSTALLED) $(AXE) $(STARTOS_MODULES)
	$(BIN)/python -m pytest

# Umbrel's own linter (umbrel-apps carries no license, so it is not copied here; `make test`
# runs its offline rules, ported): make lint-umbrel UMBREL_APPS=<checkout of getumbrel/umbrel-apps>
lint-umbrel: $(INSTALLED)
	@test -n "$(UMBREL_APPS)" || { echo "Set UMBREL_APPS to a checkout of getumbrel/umbrel-apps."; exit 2; }
	cd $(UMBREL_APPS) && npm ci --ignore-scripts --no-audit --no-fund
	UMBREL_APPS_CHECKOUT=$(abspath $(UMBREL_APPS)) $(BIN)/python -m pytest tests/packaging/test_umbrel.py -k real_linter

# By hand, on a quiet machine: each script rewrites its section of docs/benchmarks.md.
bench: $(INSTALLED_BENCH)
	$(BIN)/python bench/agents.py
	$(BIN)/python bench/brokers.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/llama_build.py
	$(BIN)/python bench/markdown.py
	$(BIN)/python bench/privacy.py
	$(BIN)/python bench/providers.py
	$(BIN)/python bench/sharing.py
	$(BIN)/python bench/threads.py
	$(BIN)/python bench/wallet.py

check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Builds and pushes the image for linux/amd64 and linux/arm64 and pins its digest into the
# Umbrel and StartOS packages: make release VERSION=1.2.3 (scripts/release says what it needs).
release:
	scripts/release $(VERSION)
