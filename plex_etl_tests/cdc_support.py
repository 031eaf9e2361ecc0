"""Helpers for the change-capture tests: the binlog MariaDB (scripts/ensure-mariadb-binlog.sh)
and the plex demo database built on it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from plex_etl.catalog.plan import SourcePlan
from plex_etl.sources import Source, get_source

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ensure-mariadb-binlog.sh"
BINLOG_PORT = int(os.environ.get("PLEX_ETL_BINLOG_PORT", "3407"))
APP_ORDERS = ("apppedidos", "apppedidoslineas", "apppedidosmovimientos", "apppedidospagos", "apppedidoslineasfact")


def ensure_binlog_server() -> None:
    """Start the binlog MariaDB when it does not answer; pytest.fail with the script's output."""
    try:
        proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"{SCRIPT} could not run: {e}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False)


def binlog_source(database: str) -> Source:
    return dataclasses.replace(get_source("plex"), database=database, port=BINLOG_PORT)


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
