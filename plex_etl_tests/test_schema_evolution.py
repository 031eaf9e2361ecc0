"""Schema evolution through the assets: a column added in MySQL appears in the warehouse table
at the next materialization (after `discover` rewrote the catalog), rows loaded before read
NULL in it, and the asset checks pass before and after. One scenario, two warehouses: the
local one here, BigQuery in test_replication_bigquery.py (beside the emulator's other users).

A scratch source (its own database and config directory) keeps this away from the
demo databases and the committed catalogs.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from plex_etl.catalog.store import run_discover
from plex_etl.mysql import create_engine
from plex_etl.sources import Source, get_source, load_sources, with_database
from plex_etl.warehouse.base import Warehouse
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import accept_proposals, build_defs, materialize, sorted_rows

SOURCE = "scratch"
TABLE = "ventas"
KEY, NAME = f"{SOURCE}/{TABLE}", f"{SOURCE}_{TABLE}"  # asset key, warehouse table
DAY1 = dt.date.today() - dt.timedelta(days=10)  # inside the rolling window of daily partitions
DAY2 = DAY1 + dt.timedelta(days=1)


def execute(server: Source, database: str, *statements: str) -> None:
    engine = create_engine(with_database(server, database))
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


def mysql_rows(server: Source, database: str, day: dt.date, columns: str) -> list[tuple]:
    engine = create_engine(with_database(server, database))
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT {columns} FROM {TABLE} WHERE DATE(Fecha) = '{day}'"))
        result = sorted(tuple(r) for r in rows)
    engine.dispose()
    return result


def write_sources(directory: Path, plex: Source, database: str) -> None:
    """A sources.yaml with the one scratch source, on the plex demo's server."""
    body = {
        "host": plex.host, "port": plex.port, "database": database, "user": plex.user,
        "password": {"env": plex.password.env} if plex.password.env else {"secret": plex.password.secret},
        "time_zone": "UTC",
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sources.yaml").write_text(yaml.safe_dump({"sources": {SOURCE: body}}))


@dataclass(frozen=True)
class Scratch:
    """A scratch source: its own MySQL database and config directory (sources.yaml, catalog, plan)."""

    server: Source  # the demo's MySQL server, connected to any database with `execute`
    database: str
    config: Path

    def execute(self, *statements: str) -> None:
        execute(self.server, self.database, *statements)

    def discover(self) -> None:
        """Rewrite the catalog (and propose a plan for new tables), as `plex-etl discover` does;
        then accept the proposals, as a reviewer does (proposed entries do not load)."""
        run_discover(load_sources()[SOURCE], directory=self.config, log=lambda _line: None)
        accept_proposals(self.config)

    def drop(self) -> None:
        execute(self.server, "information_schema", f"DROP DATABASE IF EXISTS `{self.database}`")


# Scratch sources created by the running test: conftest drops their databases at teardown,
# whether the test passed or failed (a failing test used to leak its database).
CREATED: list[Scratch] = []


def scratch_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, *statements: str) -> Scratch:
    """Source `scratch` alone in a new config directory (PLEX_ETL_CONFIG_DIR), on a fresh database
    `<test prefix>_<name>` built by `statements`, discovered; dropped after the test."""
    server = get_source("plex")  # read before the config directory changes
    database = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_{name}"
    scratch = Scratch(server, database, tmp_path / "config")
    scratch.drop()
    CREATED.append(scratch)
    execute(server, "information_schema", f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    scratch.execute(*statements)
    write_sources(scratch.config, server, database)
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(scratch.config))
    scratch.discover()
    return scratch


def scenario_added_column(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment already selects `warehouse`'s kind; `warehouse` is a handle to read it."""
    dataset = f"evolve_{warehouse.kind}"
    monkeypatch.setenv("PLEX_ETL_DATASET", dataset)
    scratch = scratch_source(
        monkeypatch, tmp_path, f"evolve_{warehouse.kind}",
        f"CREATE TABLE {TABLE} (IdVenta INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, "
        "Importe DECIMAL(12,2) NOT NULL)",
        f"INSERT INTO {TABLE} VALUES (1, '{DAY1} 09:00:00', 10.50), (2, '{DAY1} 18:30:00', 20.25), "
        f"(3, '{DAY2} 10:00:00', 5.00)",
    )
    first = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY1)
    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())
    assert list(warehouse.columns(dataset, NAME) or {})[:3] == ["IdVenta", "Fecha", "Importe"]
    assert "Canal" not in (warehouse.columns(dataset, NAME) or {})

    scratch.execute(
        f"ALTER TABLE {TABLE} ADD COLUMN Canal VARCHAR(20) NULL",
        f"INSERT INTO {TABLE} VALUES (4, '{DAY2} 11:00:00', 7.75, 'web'), (5, '{DAY2} 12:00:00', 1.00, NULL)",
    )
    scratch.discover()
    second = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY2)
    assert second.success
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert checks == {"schema_matches_catalog": True, "row_count_matches_mysql": True}
    metadata = second.asset_materializations_for_node(KEY.replace("/", "__"))[0].metadata
    assert metadata["added_columns"].value == "Canal"

    columns = warehouse.columns(dataset, NAME) or {}
    assert "Canal" in columns and columns["Canal"].upper() in ("STRING", "VARCHAR")
    sql = f"SELECT IdVenta, Canal FROM {dataset}.{NAME} WHERE _etl_partition_date = DATE '{{day}}'"
    assert sorted_rows(warehouse.query(sql.format(day=DAY1))) == [(1, None), (2, None)]
    mysql = mysql_rows(scratch.server, scratch.database, DAY2, "IdVenta, Canal")
    assert mysql == [(3, None), (4, "web"), (5, None)]
    assert sorted_rows(warehouse.query(sql.format(day=DAY2))) == mysql
    scratch.drop()


def test_added_column_lands_on_the_local_warehouse(monkeypatch, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    scenario_added_column(LocalWarehouse(path), monkeypatch, tmp_path)
    # On BigQuery: test_replication_bigquery.py::test_added_column_lands_on_bigquery
