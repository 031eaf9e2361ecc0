"""Partial or contradictory warehouse settings are refused with their names: nothing lands in a
warehouse the operator did not choose. The run config case through the real CLI, as an operator
types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plex_etl.definitions import build_definitions
from plex_etl.defs.resources import WarehouseResource, dropped_settings, warehouse_from_environment
from plex_etl.warehouse.base import WarehouseSettingsError

BIGQUERY_ENV = {"PLEX_ETL_WAREHOUSE": "bigquery", "PLEX_ETL_GCP_PROJECT": "plex-prod",
                "PLEX_ETL_BIGQUERY_LOCATION": "US"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("PLEX_ETL_WAREHOUSE", "PLEX_ETL_GCP_PROJECT", "PLEX_ETL_DATASET", "PLEX_ETL_BIGQUERY_LOCATION",
                 "PLEX_ETL_BIGQUERY_ENDPOINT", "PLEX_ETL_LOCAL_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_timeout_alone_in_run_config_is_refused_by_the_cli(tmp_path, demo_end_date):
    """PLEX_ETL_WAREHOUSE=bigquery and run config giving only request_timeout_seconds: before, the
    load went to a new local DuckDB file with exit 0; now the run fails at once naming what the
    run config dropped, and no warehouse file appears."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEX_ETL_")}
    env.update(BIGQUERY_ENV, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    config = {"resources": {"warehouse": {"config": {"request_timeout_seconds": 60}}},
              "execution": {"config": {"in_process": {}}}}
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "plex_etl.definitions",
               "--select", "plex/pedidos", "--partition", demo_end_date.isoformat(),
               "--config-json", json.dumps(config)]
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, env={**env, "PYTHONPATH": str(repo)}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "run config sets resources.warehouse.config request_timeout_seconds but not" in output
    for named in ("kind (PLEX_ETL_WAREHOUSE=bigquery)", "project (PLEX_ETL_GCP_PROJECT=plex-prod)",
                  "location (PLEX_ETL_BIGQUERY_LOCATION=US)"):
        assert named in output, named
    assert not list(tmp_path.rglob("*.duckdb"))  # nothing loaded locally
    assert "STEP_UP_FOR_RETRY" not in output


def test_run_config_that_names_every_setting_it_changes_is_accepted(clean_env):
    for name, value in BIGQUERY_ENV.items():
        clean_env.setenv(name, value)
    environment = warehouse_from_environment()
    full = WarehouseResource(kind="bigquery", project="plex-prod", location="US", request_timeout_seconds=60)
    assert dropped_settings(full, {"kind", "project", "location", "request_timeout_seconds"}, environment) == []
    # Choosing the local warehouse in run config is a choice: its own settings only count.
    local = WarehouseResource(kind="local", local_path="/tmp/x.duckdb")
    assert dropped_settings(local, {"kind", "local_path"}, environment) == []
    partial = WarehouseResource(request_timeout_seconds=60)
    assert dropped_settings(partial, {"request_timeout_seconds"}, environment) == [
        "kind (PLEX_ETL_WAREHOUSE=bigquery)", "location (PLEX_ETL_BIGQUERY_LOCATION=US)",
        "project (PLEX_ETL_GCP_PROJECT=plex-prod)"]


@pytest.mark.parametrize("env, named", [
    ({"PLEX_ETL_WAREHOUSE": "bigquery"}, "needs a GCP project: set PLEX_ETL_GCP_PROJECT"),
    ({"PLEX_ETL_WAREHOUSE": "local", "PLEX_ETL_GCP_PROJECT": "plex-prod"},
     "project='plex-prod' (PLEX_ETL_GCP_PROJECT)"),
    ({"PLEX_ETL_WAREHOUSE": "local", "PLEX_ETL_BIGQUERY_ENDPOINT": "http://x"}, "(PLEX_ETL_BIGQUERY_ENDPOINT)"),
    ({"PLEX_ETL_WAREHOUSE": "biquery"}, "not 'biquery' (PLEX_ETL_WAREHOUSE)"),
])
def test_contradictory_environments_are_refused_when_the_code_location_loads(clean_env, env, named):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(WarehouseSettingsError) as refused:
        warehouse_from_environment()
    assert named in str(refused.value)
    with pytest.raises(WarehouseSettingsError):
        build_definitions()
