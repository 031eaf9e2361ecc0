"""Schema drift through the assets, with no hand step (issue 24): a column added in MySQL lands
at the next load without `discover` (the schema check names it and asks for `discover`, which
then records it); a column dropped in MySQL no longer fails the read: it is retired in the
warehouse, and a reload of a past day keeps its values; a table renamed in MySQL fails its own
load at once, naming the table and what to do. One scenario, two warehouses: the local one
here, BigQuery in test_replication_bigquery.py (beside the emulator's other users).

A scratch source (its own database and config directory) keeps this away from the
demo databases and the committed catalogs.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
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


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def scenario_schema_drift(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
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
    first = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY1, DAY2)
    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())
    assert list(warehouse.columns(dataset, NAME) or {})[:3] == ["IdVenta", "Fecha", "Importe"]
    sql = f"SELECT IdVenta, Canal FROM {dataset}.{NAME} WHERE _etl_partition_date = DATE '{{day}}'"

    # 1. A column added in MySQL lands at the next load, before anyone runs `discover`.
    scratch.execute(
        f"ALTER TABLE {TABLE} ADD COLUMN Canal VARCHAR(20) NULL",
        f"INSERT INTO {TABLE} VALUES (4, '{DAY2} 11:00:00', 7.75, 'web'), (5, '{DAY2} 12:00:00', 1.00, NULL)",
    )
    second = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY2)
    assert second.success
    schema = checks(second)["schema_matches_catalog"]
    assert schema.passed and checks(second)["row_count_matches_mysql"].passed
    assert "new in MySQL, replicated since" in schema.description and "Canal (varchar(20))" in schema.description
    assert f"run `plex-etl discover --source {SOURCE}`" in schema.description
    metadata = second.asset_materializations_for_node(KEY.replace("/", "__"))[0].metadata
    assert metadata["added_columns"].value == "Canal" and metadata["new_columns"].value == "Canal"
    columns = warehouse.columns(dataset, NAME) or {}
    assert "Canal" in columns and columns["Canal"].upper() in ("STRING", "VARCHAR")
    assert sorted_rows(warehouse.query(sql.format(day=DAY1))) == [(1, None), (2, None)]  # not reloaded yet
    assert sorted_rows(warehouse.query(sql.format(day=DAY2))) == mysql_rows(
        scratch.server, scratch.database, DAY2, "IdVenta, Canal") == [(3, None), (4, "web"), (5, None)]
    # `discover` then records it: the same load has nothing left to report.
    scratch.discover()
    third = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY2)
    assert third.success and "new in MySQL" not in checks(third)["schema_matches_catalog"].description
    assert "schema_drift" not in third.asset_materializations_for_node(KEY.replace("/", "__"))[0].metadata

    # 2. The column dropped in MySQL: the load goes on without it, the warehouse keeps its
    # history, and reloading the day keeps each row's value (a new row holds NULL).
    scratch.execute(f"ALTER TABLE {TABLE} DROP COLUMN Canal",
                    f"INSERT INTO {TABLE} VALUES (6, '{DAY2} 13:00:00', 2.00)")
    fourth = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY2)
    assert fourth.success
    schema = checks(fourth)["schema_matches_catalog"]
    assert schema.passed and checks(fourth)["row_count_matches_mysql"].passed
    assert "retired (not written by loads any more, history kept): Canal; dropped in MySQL: Canal" in (
        schema.description)
    metadata = fourth.asset_materializations_for_node(KEY.replace("/", "__"))[0].metadata
    assert metadata["dropped_columns"].value == "Canal" and metadata["retired_columns"].value == "Canal"
    assert metadata["retired_history"].value.startswith("kept")
    kept = [(3, None), (4, "web"), (5, None), (6, None)]
    assert sorted_rows(warehouse.query(sql.format(day=DAY2))) == kept
    # After `discover` drops it from the catalog too, reloads keep it the same way.
    scratch.discover()
    fifth = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY1, DAY2)
    assert fifth.success and all(e.passed for e in fifth.get_asset_check_evaluations())
    assert "retired" in checks(fifth)["schema_matches_catalog"].description
    assert sorted_rows(warehouse.query(sql.format(day=DAY2))) == kept

    # 3. The table renamed in MySQL: its load fails at once, naming table and fix; nothing changes.
    before = sorted_rows(warehouse.query(f"SELECT * FROM {dataset}.{NAME}"))
    scratch.execute(f"RENAME TABLE {TABLE} TO {TABLE}_2024")
    renamed = materialize(build_defs(request_timeout_seconds=30), [KEY], DAY2, raise_on_error=False)
    assert not renamed.success
    failure = renamed.get_step_failure_events()[0].step_failure_data
    assert f"MySQL table {TABLE} no longer exists (renamed or dropped?)" in str(failure.error.message)
    assert f"plex-etl discover --source {SOURCE}" in str(failure.error.message)
    assert sorted_rows(warehouse.query(f"SELECT * FROM {dataset}.{NAME}")) == before
    scratch.drop()


def test_schema_drift_flows_on_the_local_warehouse(monkeypatch, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    scenario_schema_drift(LocalWarehouse(path), monkeypatch, tmp_path)
    # On BigQuery: test_replication_bigquery.py::test_schema_drift_flows_on_bigquery


def test_drift_maps_new_columns_and_names_what_it_cannot_load(tmp_path):
    """Without a database: a new column of a type the type map does not know is skipped, by
    name and reason, and the schema check warns (not blocking) while everything else passes; a
    type change is reported, not applied; a new name never takes a name the catalog recorded."""
    from plex_etl.catalog.drift import ColumnDrift, column_drift
    from plex_etl.catalog.model import Catalog, Column, Table
    from plex_etl.catalog.plan import SourcePlan, TablePlan
    from plex_etl.defs.checks import schema_check
    from plex_etl.extract.spec import replicated_table

    def column(name: str, column_type: str, ordinal: int, warehouse_name: str = "") -> Column:
        return Column(name, ordinal, column_type, column_type.split("(")[0], True, warehouse_name or name)

    table = Table("ventas", (column("id", "int(11)", 1), column("Canal", "varchar(20)", 2),
                             column("canal viejo", "int(11)", 3, "canal_viejo")), ("id",))
    live = [column("id", "bigint(20)", 1), column("Canal", "varchar(20)", 2), column("Región", "vector(3)", 3),
            column("canal_viejo", "date", 4)]
    drift = column_drift(table, live)
    assert [c.name for c in drift.added] == ["canal_viejo"] and drift.added[0].warehouse_name == "canal_viejo_2"
    assert drift.added[0].local_type == "DATE" and drift.dropped == ("canal viejo",)
    assert [(c.name, c.column_type) for c in drift.skipped] == [("Región", "vector(3)")]
    assert "unknown MySQL type 'vector'" in drift.skipped[0].reason
    assert drift.retyped == ()  # int -> bigint: both INT64, nothing to report
    assert column_drift(table, [column("id", "varchar(9)", 1)]).retyped == ("id: int(11) -> varchar(9)",)
    assert ColumnDrift.from_json(drift.to_json()) == drift

    catalog = Catalog("scratch", "scratch", {"ventas": table})
    plan = SourcePlan("scratch", {"ventas": TablePlan("ventas", strategy="snapshot")})
    spec = replicated_table(catalog, plan, "ventas", "evolve", drift)
    assert spec.column_names == ("id", "Canal", "canal_viejo_2")
    warehouse = LocalWarehouse(tmp_path / "warehouse.duckdb")
    warehouse.load(spec.target, iter(()), DAY1, DAY1)
    result = schema_check(warehouse, spec, dg.AssetKey(["scratch", "ventas"]))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert "NOT replicated (type not supported): Región (vector(3))" in result.description
    assert result.metadata["skipped_columns"].text == "Región"


def test_a_column_the_read_needs_fails_the_load_by_name(monkeypatch, tmp_path):
    """A dropped date column (or key, or parent relationship) cannot be worked around: the load
    stops before reading, naming the column and what to do."""
    from plex_etl.catalog.drift import SchemaDriftError
    from plex_etl.catalog.store import load_source
    from plex_etl.extract.spec import live_replicated_table
    from plex_etl.mysql import connect

    scratch = scratch_source(monkeypatch, tmp_path, "needed",
                             f"CREATE TABLE {TABLE} (IdVenta INT PRIMARY KEY, Fecha DATETIME NOT NULL, Nota TEXT)",
                             f"INSERT INTO {TABLE} VALUES (1, '{DAY1} 09:00:00', 'a')")
    config = load_source(SOURCE)
    source = load_sources()[SOURCE]
    with connect(source) as connection:
        spec = live_replicated_table(connection, config.catalog, config.plan, TABLE)
        assert spec.drift.empty and spec.column_names == ("IdVenta", "Fecha", "Nota")
        scratch.execute(f"ALTER TABLE {TABLE} DROP COLUMN Fecha, ADD COLUMN Fecha2 DATETIME")
        with pytest.raises(SchemaDriftError, match=f"column\\(s\\) {TABLE}.Fecha no longer exist in MySQL"):
            live_replicated_table(connection, config.catalog, config.plan, TABLE)
    scratch.drop()
