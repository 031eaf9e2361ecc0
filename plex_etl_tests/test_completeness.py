"""Every MySQL row lands exactly once, or a check fails.

One scratch source holds the hard cases the per-partition checks cannot see: rows whose
date is NULL, decades before the first partition or in the future (and their children),
a row whose own date moves, an app order whose modification moves it (and its lines)
to today, a hard delete older than the lookback, a table without a key. The scenario
runs on both warehouses (local here, BigQuery in test_replication_bigquery.py) and ends
with the whole tables equal, or with a red reconciliation check naming the table and key.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.checks import RECONCILE_CHECK, ROW_COUNT_CHECK
from plex_etl.extract.spec import replicated_table
from plex_etl.mysql import connect, create_engine
from plex_etl.reconcile import reconcile_table
from plex_etl.sources import load_sources, with_database
from plex_etl.warehouse.base import Warehouse
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import build_defs, materialize
from plex_etl_tests.test_schema_evolution import SOURCE, Scratch, scratch_source

TODAY = dt.datetime.now(dt.UTC).date()  # the scratch source's time zone is UTC


def day(offset: int) -> str:
    return (TODAY + dt.timedelta(days=offset)).isoformat()


FIRST_DAY = TODAY - dt.timedelta(days=10)
KEYS = {  # table -> primary key (warehouse and MySQL names are the same here)
    "orders": ("id",), "order_lines": ("order_id", "line"), "app_orders": ("id",),
    "app_order_lines": ("id",), "products": ("code",), "visits": (),
}
DATED = ["orders", "order_lines", "app_orders", "app_order_lines", "visits"]
SCHEMA = [
    "CREATE TABLE orders (id INT PRIMARY KEY, created DATE NULL, total DECIMAL(10,2), KEY (created))",
    "CREATE TABLE order_lines (order_id INT NOT NULL, line INT NOT NULL, qty INT, PRIMARY KEY (order_id, line), "
    "CONSTRAINT fk_lines_order FOREIGN KEY (order_id) REFERENCES orders (id))",
    "CREATE TABLE app_orders (id INT PRIMARY KEY, created DATETIME NOT NULL, modified DATETIME NULL)",
    "CREATE TABLE app_order_lines (id INT PRIMARY KEY, app_order_id INT NOT NULL, item VARCHAR(20), "
    "CONSTRAINT fk_app_lines FOREIGN KEY (app_order_id) REFERENCES app_orders (id))",
    "CREATE TABLE products (code VARCHAR(10) PRIMARY KEY, name VARCHAR(30))",
    "CREATE TABLE visits (happened DATE NULL, who VARCHAR(10))",
    # NULL, 1985, two on day -5, yesterday, today, a month ahead
    "INSERT INTO orders VALUES (1, NULL, 1), (2, '1985-06-01', 2), "
    f"(3, '{day(-5)}', 3), (4, '{day(-5)}', 4), (5, '{day(-1)}', 5), (6, '{day(30)}', 6), (7, '{day(0)}', 7)",
    "INSERT INTO order_lines VALUES (1,1,1),(1,2,1),(2,1,1),(3,1,1),(3,2,1),(4,1,1),(4,2,1),(5,1,1),(6,1,1),"
    "(6,2,1),(7,1,1)",
    f"INSERT INTO app_orders VALUES (1, '{day(-6)} 10:00', NULL), (2, '{day(-6)} 11:00', '{day(-4)} 09:00'), "
    f"(3, '{day(0)} 08:00', NULL)",
    "INSERT INTO app_order_lines VALUES (1,1,'a'),(2,1,'b'),(3,2,'c'),(4,2,'d'),(5,3,'e'),(6,3,'f')",
    "INSERT INTO products VALUES ('A', 'aspirina'), ('B', 'bicarbonato'), ('C', 'crema')",
    f"INSERT INTO visits VALUES (NULL, 'x'), ('1990-01-01', 'y'), ('1990-01-01', 'y'), ('{day(-2)}', 'z'), "
    f"('{day(-2)}', 'z'), ('{day(3)}', 'w')",
]
PLAN = f"""\
defaults:
  first_day: {FIRST_DAY}
  lookback_days: 3
tables:
  orders: {{strategy: event, date_columns: [created], tier: standard}}
  order_lines: {{strategy: child, parent: fk_lines_order, tier: standard}}
  app_orders: {{strategy: upsert, created_column: created, modified_column: modified, tier: app_orders}}
  app_order_lines: {{strategy: child, parent: fk_app_lines, tier: app_orders}}
  products: {{strategy: snapshot, tier: master_daily}}
  visits: {{strategy: event, date_columns: [happened], tier: standard}}
"""


def build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> Scratch:
    scratch = scratch_source(monkeypatch, tmp_path, f"complete_{kind}", *SCHEMA)
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(PLAN)
    return scratch


def key(table: str) -> str:
    return f"{SOURCE}/{table}"


def ordered(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=lambda r: tuple((v is None, str(v)) for v in r))


def mysql_table(scratch: Scratch, table: str) -> list[tuple]:
    """The table's keys (or its whole rows, without a key) in MySQL, sorted."""
    columns = ", ".join(KEYS[table]) or "happened, who"
    engine = create_engine(with_database(scratch.server, scratch.database))
    with engine.connect() as connection:
        rows = ordered(connection.execute(sa.text(f"SELECT {columns} FROM {table}")))
    engine.dispose()
    return rows


def warehouse_table(warehouse: Warehouse, dataset: str, table: str) -> list[tuple]:
    columns = ", ".join(KEYS[table]) or "happened, who"
    rows = warehouse.query(f"SELECT {columns} FROM {dataset}.{SOURCE}_{table}").to_pylist()
    return ordered(r.values() for r in rows)


def reconcile_all(warehouse: Warehouse, dataset: str) -> dict[str, object]:
    catalog, plan = load_source_catalog(SOURCE)
    source = load_sources()[SOURCE]
    with connect(source) as connection:
        return {
            t: reconcile_table(connection, warehouse, replicated_table(catalog, plan, t, dataset), TODAY)
            for t in KEYS
        }


def replicate_everything(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    assert materialize(defs, [key("products")], TODAY).success
    return materialize(defs, [key(t) for t in DATED], FIRST_DAY, TODAY)


def partition_counts(result: dg.ExecuteInProcessResult, table: str) -> dict[str, tuple[int, int]]:
    """Partition key -> (rows landed, rows in the MySQL snapshot) from each materialization."""
    return {
        m.partition: (m.metadata["dagster/row_count"].value, m.metadata["mysql_snapshot_rows"].value)
        for m in result.asset_materializations_for_node(key(table).replace("/", "__"))
    }


def scenario_every_row_exactly_once(warehouse: Warehouse, dataset: str, monkeypatch, tmp_path) -> Scratch:
    """The environment already selects `warehouse`'s kind and `dataset`."""
    scratch = build(monkeypatch, tmp_path, warehouse.kind)
    defs = build_defs(request_timeout_seconds=30)

    # 1. A full replication loads every row, whatever its date: NULL, 1985, a month ahead.
    full = replicate_everything(defs)
    assert full.success
    assert all(e.passed for e in full.get_asset_check_evaluations() if e.check_name == ROW_COUNT_CHECK)
    for table in KEYS:
        assert warehouse_table(warehouse, dataset, table) == mysql_table(scratch, table), table
    assert all(r.equal for r in reconcile_all(warehouse, dataset).values())
    # Each day of the range run has its own figures: the first partition holds the undated
    # and early orders (1 and 2), today's holds today's and the future one (7 and 6).
    orders = partition_counts(full, "orders")
    assert len(orders) == 11
    assert orders[FIRST_DAY.isoformat()] == (2, 2)
    assert orders[day(-5)] == (2, 2)
    assert orders[day(0)] == (2, 2)
    assert orders[day(-3)] == (0, 0)
    # The whole load's figures (the row-count check's input) ride on the last day only: on
    # every day they made long ranges cost quadratic bookkeeping.
    events = full.asset_materializations_for_node(key("orders").replace("/", "__"))
    assert [e.partition for e in events if "mysql_snapshot_counts" in e.metadata] == [day(0)]
    assert sum(events[-1].metadata["mysql_snapshot_counts"].value.values()) == sum(n for n, _ in orders.values())

    # 2. Rows move: an order's own date, an app order's modification (and with them their
    # lines); an order older than the lookback is hard-deleted; a visit arrives.
    scratch.execute(
        f"UPDATE orders SET created = '{day(-1)}' WHERE id = 3",
        f"UPDATE app_orders SET modified = '{day(0)} 12:00' WHERE id = 1",
        "DELETE FROM order_lines WHERE order_id = 4",
        "DELETE FROM orders WHERE id = 4",
        f"INSERT INTO visits VALUES ('{day(-1)}', 'v')",
    )
    tick = materialize(defs, [key(t) for t in DATED], TODAY - dt.timedelta(days=2), TODAY)
    assert tick.success
    # No key is ever held twice: moved rows left their old day.
    for table in ("orders", "order_lines", "app_orders", "app_order_lines"):
        landed = warehouse_table(warehouse, dataset, table)
        assert len(landed) == len(set(landed)), table
    app_lines = warehouse.query(
        f"SELECT id, _etl_partition_date AS d FROM {dataset}.{SOURCE}_app_order_lines WHERE app_order_id = 1"
    ).to_pylist()
    assert sorted((r["id"], r["d"].isoformat()) for r in app_lines) == [(1, day(0)), (2, day(0))]
    for table in ("app_orders", "app_order_lines", "visits", "products"):
        assert warehouse_table(warehouse, dataset, table) == mysql_table(scratch, table), table

    # 3. The delete beyond the lookback is still in the warehouse: reconciliation says so,
    # per table, with the key and the day; the scheduled check is red.
    results = reconcile_all(warehouse, dataset)
    assert {t for t, r in results.items() if not r.equal} == {"orders", "order_lines"}
    assert results["orders"].partitions_to_reload(TODAY) == [TODAY - dt.timedelta(days=5)]
    assert any("id=4" in k for k in results["orders"].extra_keys)
    assert any("order_id=4, line=1" in k for k in results["order_lines"].extra_keys)
    checks = run_reconciliation(defs)
    assert checks[key("orders")] == (False, dg.AssetCheckSeverity.ERROR)
    assert checks[key("order_lines")] == (False, dg.AssetCheckSeverity.ERROR)
    assert all(passed for k, (passed, _) in checks.items() if k not in (key("orders"), key("order_lines")))

    # 4. Reloading exactly the partitions it names repairs the warehouse.
    assert materialize(defs, [key("orders"), key("order_lines")], TODAY - dt.timedelta(days=5)).success
    for table in KEYS:
        assert warehouse_table(warehouse, dataset, table) == mysql_table(scratch, table), table
    assert all(passed for passed, _ in run_reconciliation(defs).values())
    return scratch


def run_reconciliation(defs: dg.Definitions) -> dict[str, tuple[bool, dg.AssetCheckSeverity]]:
    """The scheduled reconciliation job, run once: check results per asset."""
    job = defs.resolve_job_def(f"{SOURCE}_reconciliation")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    return {
        e.asset_key.to_user_string(): (e.passed, e.severity)
        for e in result.get_asset_check_evaluations() if e.check_name == RECONCILE_CHECK
    }


@pytest.fixture
def local_env(monkeypatch, tmp_path) -> LocalWarehouse:
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.setenv("PLEX_ETL_DATASET", "complete")
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    return LocalWarehouse(path)


def test_every_row_lands_exactly_once_on_the_local_warehouse(local_env, monkeypatch, tmp_path):
    scratch = scenario_every_row_exactly_once(local_env, "complete", monkeypatch, tmp_path)
    scratch.drop()
    # On BigQuery: test_replication_bigquery.py::test_every_row_lands_exactly_once_on_bigquery


def test_reconcile_command_reports_and_repairs(local_env, monkeypatch, tmp_path):
    """`plex-etl reconcile` as an operator runs it: exit 1 naming table and key, then --repair."""
    scratch = build(monkeypatch, tmp_path, "cli")
    defs = build_defs()
    assert replicate_everything(defs).success
    scratch.execute(f"INSERT INTO visits VALUES ('{day(-8)}', 'late')", "DELETE FROM products WHERE code = 'C'",
                    "UPDATE orders SET created = NULL WHERE id = 5")

    def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
        return subprocess.run([sys.executable, "-m", "plex_etl.cli", "reconcile", "--source", SOURCE, *args],
                              capture_output=True, text=True, env=env, timeout=600)

    report = reconcile()
    assert report.returncode == 1, report.stdout + report.stderr
    assert f"{SOURCE}.visits (event): MySQL 7 rows, warehouse 6: 1 day(s) differ" in report.stdout
    assert f"{day(-8)}: MySQL 1 rows, warehouse 0 (1 missing)" in report.stdout
    assert "missing in the warehouse, e.g. id=5" in report.stdout  # now undated: first partition
    assert f"{SOURCE}.products (snapshot)" in report.stdout and "code=C" in report.stdout
    assert f"{SOURCE}.app_orders (upsert): MySQL 3 rows, warehouse 3: equal (counts, keys and values)" in report.stdout
    assert f"{SOURCE}.order_lines (child)" in report.stdout  # order 5's lines moved with it
    assert "4 table(s) differ" in report.stderr

    repaired = reconcile("--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.stdout.count("after repair:") == 4
    for table in KEYS:
        assert warehouse_table(local_env, "complete", table) == mysql_table(scratch, table), table
    scratch.drop()


def test_replicate_a_source_without_dated_tables_runs_only_its_snapshots(local_env, monkeypatch, tmp_path):
    """`plex-etl replicate --source S` never hands Dagster an empty selection (that would run
    every asset of every source over the whole history)."""
    scratch = scratch_source(monkeypatch, tmp_path, "snaponly",
                             "CREATE TABLE products (code VARCHAR(10) PRIMARY KEY, name VARCHAR(30))",
                             "INSERT INTO products VALUES ('A', 'aspirina')")
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(
        "tables:\n  products: {strategy: snapshot, tier: master_daily}\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "plex_etl.cli", "replicate", "--source", SOURCE, "--days", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("$ ")]
    # Snapshot assets have no partitions: one run, the snapshot table alone.
    assert len(commands) == 1 and 'key:"scratch/products"' in commands[0] and "--partition" not in commands[0]
    assert warehouse_table(local_env, "complete", "products") == [("A",)]
    scratch.drop()


def test_reconciliation_of_a_table_never_loaded_fails_naming_it(local_env, monkeypatch, tmp_path):
    scratch = build(monkeypatch, tmp_path, "unloaded")
    results = reconcile_all(local_env, "complete")
    orders = results["orders"]
    assert not orders.equal and orders.warehouse_rows == 0 and orders.mysql_rows == 7
    assert "not loaded into the warehouse yet" in orders.describe()
    assert any("id=1" in k for k in orders.missing_keys)
    scratch.drop()
