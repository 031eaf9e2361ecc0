"""Long histories on Dagster's stock storage: a rolling window of daily partitions whose first
partition also loads the whole history, every row keeping its own day in the warehouse.

One scratch source with 25 years of orders (and their lines): a full refresh records a window
of partitions, not 9,000; the history's rows land on their own days; a difference deep in the
history is repaired by reloading that day alone, through the first partition, without touching
the rest; a row inserted today but dated years back (or undated) lands with the next tick by its
new key; no tick ever plans the first partition.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pytest

from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.checks import ROW_COUNT_CHECK
from plex_etl.extract.spec import replicated_table
from plex_etl.mysql import connect
from plex_etl.reconcile import TableReconciliation, reconcile_table
from plex_etl.sources import load_sources
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import build_defs, materialize
from plex_etl_tests.test_schema_evolution import SOURCE, Scratch, scratch_source

TODAY = dt.datetime.now(dt.UTC).date()  # the scratch source's time zone is UTC
FIRST_DAY = dt.date(2001, 1, 1)
OLD = dt.date(2003, 5, 17)  # deep in the history
KEYS = {"orders": ("id",), "order_lines": ("order_id", "line")}


def first_partition() -> dt.date:
    _catalog, plan = load_source_catalog(SOURCE)
    return plan.first_partition(TODAY)


def schema() -> list[str]:
    days = [FIRST_DAY, OLD, OLD, dt.date(2015, 8, 1), TODAY - dt.timedelta(days=70), TODAY - dt.timedelta(days=2),
            TODAY]
    rows = ", ".join(f"({i}, '{d}', {i})" for i, d in enumerate(days, start=1))
    return [
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, created DATE NULL, total INT)",
        "CREATE TABLE order_lines (order_id INT NOT NULL, line INT NOT NULL, qty INT, PRIMARY KEY (order_id, line), "
        "CONSTRAINT fk_lines FOREIGN KEY (order_id) REFERENCES orders (id))",
        f"INSERT INTO orders VALUES {rows}, (8, NULL, 8)",
        "INSERT INTO order_lines SELECT id, n.n, n.n FROM orders, (SELECT 1 n UNION SELECT 2) n",
    ]


PLAN = f"""\
defaults:
  first_day: {FIRST_DAY}
tables:
  orders: {{strategy: event, date_columns: [created], tier: standard}}
  order_lines: {{strategy: child, parent: fk_lines, tier: standard}}
"""


def days_landed(warehouse: LocalWarehouse, table: str) -> dict[int, tuple[dt.date, dt.datetime]]:
    """order id -> (its warehouse day, when it landed) of a table's rows."""
    column = "id" if table == "orders" else "order_id"
    rows = warehouse.query(
        f"SELECT {column} AS id, _etl_partition_date AS day, _etl_loaded_at AS at FROM history.{SOURCE}_{table}"
    ).to_pylist()
    return {r["id"]: (r["day"], r["at"]) for r in rows}


@pytest.fixture
def history(monkeypatch, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.setenv("PLEX_ETL_DATASET", "history")
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    scratch = scratch_source(monkeypatch, tmp_path, "history", *schema())
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(PLAN)
    yield scratch, LocalWarehouse(path)
    scratch.drop()


def test_a_full_refresh_records_a_window_and_keeps_every_rows_day(history):
    scratch, warehouse = history
    defs = build_defs()
    first = first_partition()
    assert first >= TODAY - dt.timedelta(days=61) and first.day == 1
    orders_def = defs.get_assets_def(dg.AssetKey([SOURCE, "orders"]))
    assert orders_def.partitions_def.get_first_partition_key() == first.isoformat()

    full = materialize(defs, [f"{SOURCE}/orders", f"{SOURCE}/order_lines"], first, TODAY)
    assert full.success
    assert all(e.passed for e in full.get_asset_check_evaluations() if e.check_name == ROW_COUNT_CHECK)
    events = full.asset_materializations_for_node(f"{SOURCE}__orders")
    assert len(events) == (TODAY - first).days + 1  # one per day of the window, not one per day since 2001
    by_day = {e.partition: e.metadata["rows"].value for e in events}
    assert by_day[first.isoformat()] == 6  # 2001, 2003 (two), 2015, 70 days ago and the undated one
    landed = days_landed(warehouse, "orders")
    assert landed[2][0] == landed[3][0] == OLD and landed[4][0] == dt.date(2015, 8, 1)  # their own days
    assert landed[8][0] == FIRST_DAY  # undated: on the history floor
    assert landed[5][0] == TODAY - dt.timedelta(days=70)
    for table, key in KEYS.items():
        columns = ", ".join(key)
        in_warehouse = warehouse.query(f"SELECT {columns} FROM history.{SOURCE}_{table}").to_pylist()
        assert sorted(tuple(r.values()) for r in in_warehouse) == mysql_keys(scratch, table, columns)
    assert all(r.equal for r in reconcile_tables(warehouse).values())


def mysql_keys(scratch: Scratch, table: str, columns: str) -> list[tuple]:
    import sqlalchemy as sa

    from plex_etl.mysql import create_engine
    from plex_etl.sources import with_database

    engine = create_engine(with_database(scratch.server, scratch.database))
    with engine.connect() as connection:
        rows = sorted(tuple(r) for r in connection.execute(sa.text(f"SELECT {columns} FROM {table}")))
    engine.dispose()
    return rows


def reconcile_tables(warehouse: LocalWarehouse) -> dict[str, TableReconciliation]:
    catalog, plan = load_source_catalog(SOURCE)
    with connect(load_sources()[SOURCE]) as connection:
        return {t: reconcile_table(connection, warehouse, replicated_table(catalog, plan, t, "history"), TODAY)
                for t in KEYS}


def test_a_difference_deep_in_history_is_repaired_alone(history, tmp_path):
    """`plex-etl reconcile --repair` reloads the one day of 2003 that differs, through the first
    partition narrowed to that day: the other history days keep the rows they had."""
    scratch, warehouse = history
    defs = build_defs()
    assert materialize(defs, [f"{SOURCE}/orders", f"{SOURCE}/order_lines"], first_partition(), TODAY).success
    before = days_landed(warehouse, "orders")
    scratch.execute("DELETE FROM order_lines WHERE order_id = 3", "DELETE FROM orders WHERE id = 3")
    results = reconcile_tables(warehouse)
    assert results["orders"].partitions_to_reload(TODAY) == [OLD]

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    repaired = subprocess.run([sys.executable, "-m", "plex_etl.cli", "reconcile", "--source", SOURCE, "--repair"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    run = next(line for line in repaired.stdout.splitlines() if line.startswith("$ ") and "orders" in line)
    assert f"--partition {first_partition()}" in run and f'"days": "{OLD}...{OLD}"' in run
    after = days_landed(warehouse, "orders")
    assert 3 not in after and after[2][0] == OLD
    assert after[2][1] > before[2][1]  # the day reloaded...
    assert {i: after[i] for i in (1, 4, 5, 8)} == {i: before[i] for i in (1, 4, 5, 8)}  # ...and no other
    assert all(r.equal for r in reconcile_tables(warehouse).values())


def test_rows_inserted_late_with_an_old_or_no_date_come_with_the_next_tick(history):
    scratch, warehouse = history
    defs = build_defs()
    assert materialize(defs, [f"{SOURCE}/orders", f"{SOURCE}/order_lines"], first_partition(), TODAY).success
    scratch.execute(f"INSERT INTO orders VALUES (9, '{OLD}', 9), (10, NULL, 10), "
                    f"(11, '{TODAY - dt.timedelta(days=20)}', 11), (12, '{TODAY}', 12)")
    tick = materialize(defs, [f"{SOURCE}/orders"], TODAY - dt.timedelta(days=2), TODAY)
    assert tick.success
    assert all(e.passed for e in tick.get_asset_check_evaluations())
    landed = days_landed(warehouse, "orders")
    assert (landed[9][0], landed[10][0], landed[11][0], landed[12][0]) == (
        OLD, FIRST_DAY, TODAY - dt.timedelta(days=20), TODAY)
    last = tick.asset_materializations_for_node(f"{SOURCE}__orders")[-1]
    assert last.metadata["new_rows_merged_into_other_days"].value == 3
    assert reconcile_tables(warehouse)["orders"].equal
    planned = {e.partition for e in tick.asset_materializations_for_node(f"{SOURCE}__orders")}
    assert first_partition().isoformat() not in planned


def test_days_outside_the_runs_partitions_are_refused_by_name(history):
    _scratch, _warehouse = history
    defs = build_defs()
    asset = defs.get_assets_def(dg.AssetKey([SOURCE, "orders"]))
    day = TODAY - dt.timedelta(days=1)
    result = dg.materialize(
        [asset], partition_key=day.isoformat(), resources=defs.resources, instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False, run_config={"ops": {f"{SOURCE}__orders": {"config": {"days": str(OLD)}}},
                                          "execution": {"config": {"retries": {"disabled": {}}}}},
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert f"{SOURCE}.orders: days {OLD}...{OLD} are not all in the partitions of this run" in message
