# Two commands for a newcomer: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
DEMO_SCALE ?= 0.001

.PHONY: venv demo test lint mysql dev clean

$(BIN)/.installed: pyproject.toml
	./scripts/ensure-build-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed
	@mkdir -p $(DAGSTER_HOME) && ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml

mysql:
	./scripts/ensure-mysql.sh

demo: venv mysql
	$(BIN)/plex-etl demo-db --scale $(DEMO_SCALE) --source all
	$(BIN)/plex-etl replicate --days 7
	$(BIN)/plex-etl compare --days 7

test: venv mysql
	./scripts/setup-bq-emulator.sh
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check plex_etl plex_etl_tests benchmarks

dev: venv
	$(BIN)/dagster dev -m plex_etl.definitions

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
