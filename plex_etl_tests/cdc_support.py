"""Helpers for the change-capture tests: the binlog MariaDB (scripts/ensure-mariadb-binlog.sh)
and the plex demo database built on it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from plex_etl.catalog.plan import SourcePlan
from plex_etl.demo.capture import APP_ORDERS, DATASET, binlog_source
from plex_etl.extract.spec import load_mode, read_bounds, replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import create_engine
from plex_etl.reconcile import reconcile_table
from plex_etl.sources import Source
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import sorted_rows

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ensure-mariadb-binlog.sh"


def ensure_binlog_server() -> None:
    """Start the binlog MariaDB when it does not answer; pytest.fail with the script's output."""
    try:
        proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"{SCRIPT} could not run: {e}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False)


def build_binlog_demo(end_date: dt.date) -> Source:
    from plex_etl.demo.builder import build_demo

    ensure_binlog_server()
    prefix = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")
    source = binlog_source(f"{prefix}_cdc_plex")
    build_demo(source, scale=0.001, days=30, seed=7, force=True, end_date=end_date, log=lambda _m: None)
    return source


def capture_plan(plan: SourcePlan, tables: tuple[str, ...] = APP_ORDERS) -> SourcePlan:
    """The plan with `capture: binlog` on `tables`."""
    return dataclasses.replace(plan, tables={
        n: dataclasses.replace(p, capture="binlog") if n in tables else p for n, p in plan.tables.items()
    })


def execute(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as connection:
        for sql in statements:
            connection.execute(sa.text(sql))


def assert_equal_to_polling(source, catalog, plan, warehouse: LocalWarehouse, tmp_path: Path, today: dt.date):
    """Every captured table equals MySQL (reconciliation) and equals, row for row and value for
    value, what the polling path loads from the same data."""
    polled = LocalWarehouse(tmp_path / f"polled_{time.monotonic_ns()}.duckdb")
    with create_engine(source).connect() as connection:
        for table in APP_ORDERS:
            spec = replicated_table(catalog, plan, table, DATASET)
            result = reconcile_table(connection, warehouse, spec, today)
            assert result.equal, result.describe()
            lo, hi = read_bounds(spec, plan.first_day, today, today, plan.first_partition(today))
            polled.load(spec.target, PartitionStream(source, spec, lo, hi), lo, hi, load_mode(spec))
            ref = f"{DATASET}.{spec.target.name}"
            assert sorted_rows(warehouse.query(f"SELECT * FROM {ref}")) == sorted_rows(
                polled.query(f"SELECT * FROM {ref}")), table
