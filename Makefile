# Two commands do everything on a fresh machine with only Python 3.11+ and pip:
#   make run    start NATS, every service and the gateway on http://127.0.0.1:$(PORT)
#   make test   lint, every member's own tests, the whole-system tests
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
# uv builds .venv with the interpreter that runs make (no Python download needed).
export UV_PYTHON ?= $(shell command -v $(PYTHON))
export UV_LINK_MODE ?= copy
# Trust the system certificate store (a corporate or sandbox TLS proxy); older uv reads UV_NATIVE_TLS.
export UV_SYSTEM_CERTS ?= 1
export UV_NATIVE_TLS ?= 1
MEMBERS := libs/realtime services/echo services/rooms services/stats gateway clients/python
MANIFESTS := pyproject.toml uv.lock $(foreach m,$(MEMBERS) tools/devstack,$(m)/pyproject.toml)

.PHONY: help install run test lint unit system bench clean asyncapi

help:
	@echo "make run    start the whole stack (PORT=8000, SCALE=\"rooms=2 stats=2\")"
	@echo "make test   lint + every member's tests + whole-system tests"
	@echo "make bench  benchmarks, printed as tables"

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS) "uv>=0.5,<1"

$(VENV)/.installed: $(UV) $(MANIFESTS)
	$(UV) sync --all-packages --frozen
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m devstack

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Each member's tests run alone, with that member's own pytest settings.
unit: install
	@set -e; for m in $(MEMBERS); do echo "== $$m"; $(VENV)/bin/pytest $$m; done

system: install
	$(VENV)/bin/pytest tests

# The AsyncAPI document (docs/asyncapi.yaml), validated by the official CLI pinned in tools/asyncapi
# (npm ci from its lock, reinstalled only when the lock changes). No traffic leaves the machine: the
# CLI's analytics are off (its config file, written here, says so, and CI=true), the update check is
# skipped, and HOME points inside .stack so nothing is written to the user's home.
ASYNCAPI_DIR := tools/asyncapi
ASYNCAPI_HOME := $(CURDIR)/.stack/asyncapi-home
ASYNCAPI_ENV := HOME=$(ASYNCAPI_HOME) ASYNCAPI_METRICS_CONFIG_PATH=$(ASYNCAPI_HOME)/.asyncapi-analytics \
	CI=true ASYNCAPI_SKIP_NEW_VERSION_CHECK=true

$(ASYNCAPI_DIR)/node_modules/.installed: $(ASYNCAPI_DIR)/package.json $(ASYNCAPI_DIR)/package-lock.json
	npm ci --prefix $(ASYNCAPI_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

asyncapi: $(ASYNCAPI_DIR)/node_modules/.installed
	@mkdir -p $(ASYNCAPI_HOME)
	@echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"none"}' > $(ASYNCAPI_HOME)/.asyncapi-analytics
	$(ASYNCAPI_ENV) $(ASYNCAPI_DIR)/node_modules/.bin/asyncapi validate docs/asyncapi.yaml --fail-severity=warn

test: lint asyncapi unit system

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .stack
