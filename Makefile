# Two commands for a newcomer: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
DEMO_SCALE ?= 0.001
DEV_PORT ?= 3000

.PHONY: venv demo demo-capture test lint mysql dev clean lock pools

# requirements.lock pins every package (dev and deploy extras included) for Python 3.11 on
# linux x86_64; regenerate it with `make lock` after changing pyproject.toml.
$(BIN)/.installed: pyproject.toml requirements.lock setup.py plex_etl/extract/_binary.c
	./scripts/ensure-build-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed
	@mkdir -p $(DAGSTER_HOME) && ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

mysql:
	./scripts/ensure-mysql.sh

# Each source's Dagster pool gets its sources.yaml pool_limit (kept in the instance's storage).
pools: venv
	$(BIN)/plex-etl pools

demo: venv mysql pools
	$(BIN)/plex-etl demo-db --scale $(DEMO_SCALE) --source all
	$(BIN)/plex-etl replicate --days 7
	$(BIN)/plex-etl compare --days 7

# Change capture: the binlog MariaDB (port 3407), capture on for the app orders, the worker
# running, the lag of a few writes printed (plex_etl/demo/capture.py).
demo-capture: venv
	$(BIN)/python -m plex_etl.demo.capture

# The binary read's C extension first, built with AddressSanitizer/UBSan (about 2 minutes).
test: venv mysql
	./scripts/sanitizer-tests.sh
	./scripts/setup-bq-emulator.sh
	./scripts/setup-helm.sh
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check plex_etl plex_etl_tests benchmarks

# `plex-etl dev` runs `dagster dev` so that SIGTERM and SIGINT stop it within seconds, even when
# make itself was started in the background (plex_etl/supervise.py).
dev: venv pools
	$(BIN)/plex-etl dev --port $(DEV_PORT)

# Both lock files from pyproject.toml, with uv (installed on the fly into a throwaway venv).
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header
lock:
	test -x /tmp/plex-etl-uv/bin/uv || ($(PYTHON) -m venv /tmp/plex-etl-uv && /tmp/plex-etl-uv/bin/pip install -q uv)
	/tmp/plex-etl-uv/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --extra dev --extra deploy -o requirements.lock
	/tmp/plex-etl-uv/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --extra deploy -o requirements-deploy.lock

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
