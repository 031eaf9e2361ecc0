"""Change-capture lag and catch-up throughput: `python -m benchmarks.cdc_lag [--seconds 60] [--rate 50]`.

On the binlog MariaDB (scripts/ensure-mariadb-binlog.sh, port 3407) with the Plex demo at
scale 0.001 and the app orders captured (`capture: binlog`), into a local warehouse, or with
`--warehouse emulator` into the tests' BigQuery emulator (plex_etl_tests/bq_emulator.py,
PLEX_ETL_EMULATOR_DIR) behind benchmarks/bq_latency_proxy.py: every job the capture runs
takes `--delay` seconds (3), as on BigQuery; the visibility checks query the emulator
directly, without that delay, so they time the capture and not the checks:

1. Lag: a writer commits orders at `--rate` changes per second for `--seconds` (60% new
   orders with a line, 30% updates of the amount, 10% deletes of an order and its lines)
   while the capture runs its bounded steps back to back, as the sensor's runs do. After
   each step the warehouse is read: a change is visible when its order is there with the
   new amount, or gone. Lag = visible - MySQL commit.
2. Catch-up: `--catchup` changes are written with the capture stopped, then the capture
   runs until caught up: row changes applied per second (`--catchup 0` skips it).

Prints one JSON line. The figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.catalog.store import load_source_catalog
from plex_etl.cdc.apply import step
from plex_etl.demo.builder import build_demo
from plex_etl.mysql import create_engine
from plex_etl.sources import Source, get_source
from plex_etl.warehouse.local import LocalWarehouse

REPO = Path(__file__).resolve().parents[1]
APP_ORDERS = ("apppedidos", "apppedidoslineas", "apppedidosmovimientos", "apppedidospagos", "apppedidoslineasfact")
DATASET = "plex_analytics"


def binlog_source(database: str) -> Source:
    """The plex source on the binlog MariaDB (port 3407), database `database`."""
    return dataclasses.replace(get_source("plex"), database=database, port=3407)


def captured_plan() -> tuple[Catalog, SourcePlan]:
    """The plex catalog and plan with the app orders captured (`capture: binlog`)."""
    catalog, plan = load_source_catalog("plex")
    return catalog, dataclasses.replace(plan, tables={
        n: dataclasses.replace(p, capture="binlog") if n in APP_ORDERS else p for n, p in plan.tables.items()
    })


class Writer(threading.Thread):
    """Commits inserts, updates and deletes of orders at a steady rate; records each commit."""

    def __init__(self, engine: sa.Engine, rate: float, seconds: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.rate, self.seconds, self.prefix = engine, rate, seconds, prefix
        self.pending: dict[str, tuple[float | None, float]] = {}  # order -> (expected amount or None, commit)
        self.live: list[str] = []
        self.lock = threading.Lock()
        self.changes = 0

    def change(self, connection: sa.Connection, n: int) -> tuple[str, float | None]:
        roll = random.random()
        if roll < 0.6 or len(self.live) < 10:
            order = f"{self.prefix}{n}"
            connection.execute(sa.text(
                "INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, IDRed, Fecha, IdEstado, FechaEstado, "
                f"cli_nombre, Importe) SELECT '{order}', IDPedidoOrigen, IDOrigen, IDRed, NOW(), IdEstado, NULL, "
                "'bench', 10 FROM apppedidos ORDER BY IDPedido LIMIT 1"))
            connection.execute(sa.text(
                f"INSERT INTO apppedidoslineas (IDPedido, IdProducto, Cantidad) SELECT '{order}', IdProducto, 1 "
                "FROM apppedidoslineas ORDER BY IdRegistro LIMIT 1"))
            self.live.append(order)
            return order, 10.0
        order = random.choice(self.live)
        if roll < 0.9:
            amount = float(n % 1000) + 0.5
            connection.execute(sa.text(f"UPDATE apppedidos SET Importe = {amount} WHERE IDPedido = '{order}'"))
            return order, amount
        connection.execute(sa.text(f"DELETE FROM apppedidoslineas WHERE IDPedido = '{order}'"))
        connection.execute(sa.text(f"DELETE FROM apppedidos WHERE IDPedido = '{order}'"))
        self.live.remove(order)
        return order, None

    def run(self) -> None:
        interval = 1.0 / self.rate if self.rate else 0.0
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.seconds:
            with self.engine.begin() as connection:
                order, amount = self.change(connection, n)
            with self.lock:
                self.pending[order] = (amount, time.time())
            n += 1
            self.changes = n
            if interval:
                time.sleep(max(0.0, start + n * interval - time.monotonic()))


def visible(warehouse: Any, ref: str, writer: Writer, lags: list[float]) -> None:
    """Time the pending changes the warehouse shows (`ref`: its apppedidos table)."""
    now = time.time()  # the query reads the table as it is now
    rows = warehouse.query(
        f"SELECT IDPedido, Importe FROM {ref} WHERE IDPedido LIKE '{writer.prefix}%'"
    ).to_pylist()
    landed = {r["IDPedido"]: float(r["Importe"]) for r in rows}
    with writer.lock:
        for order, (amount, committed) in list(writer.pending.items()):
            if (amount is None and order not in landed) or (amount is not None and landed.get(order) == amount):
                lags.append(now - committed)
                del writer.pending[order]


@contextlib.contextmanager
def warehouses(kind: str, tmp: Path, delay: float) -> Iterator[tuple[Any, Any, str]]:
    """(warehouse the capture writes, warehouse the checks read, apppedidos table reference)."""
    if kind == "local":
        local = LocalWarehouse(tmp / "cdc.duckdb")
        yield local, local, f"{DATASET}.plex_apppedidos"
        return
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from benchmarks.bq_latency_proxy import LatencyProxy
    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client
    from plex_etl_tests import bq_emulator

    if not (bq_emulator.EMULATOR_DIR / ".installed").exists():
        bq_emulator.install()
    process, emulator = bq_emulator.start(tmp)
    proxy = LatencyProxy(emulator.endpoint, delay=delay)
    try:
        def warehouse(endpoint: str) -> BigQueryWarehouse:
            return BigQueryWarehouse(bigquery_client(emulator.project, "US", api_endpoint=endpoint), "US",
                                     retry=DEFAULT_RETRY.with_timeout(120), job_retry=None, job_timeout=600,
                                     staging_dir=tmp)

        yield (warehouse(proxy.start()), warehouse(emulator.endpoint),
               f"`{emulator.project}.{DATASET}.plex_apppedidos`")
    finally:
        proxy.stop()
        bq_emulator.stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--catchup", type=int, default=5000)
    parser.add_argument("--database", default="plexetl_bench_cdc")
    parser.add_argument("--warehouse", choices=("local", "emulator"), default="local")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds each emulator job takes")
    args = parser.parse_args()

    subprocess.run([str(REPO / "scripts" / "ensure-mariadb-binlog.sh")], check=True, timeout=300)
    source = binlog_source(args.database)
    today = time.strftime("%Y-%m-%d")
    build_demo(source, scale=0.001, days=30, seed=7, force=True,
               end_date=datetime.now(ZoneInfo(source.time_zone)).date(), log=lambda _m: None)
    catalog, plan = captured_plan()
    engine = create_engine(source)
    with tempfile.TemporaryDirectory() as tmp, warehouses(args.warehouse, Path(tmp), args.delay) as (
        warehouse, observer, ref
    ):
        step(source, catalog, plan, warehouse, DATASET)  # the first copy and start position

        writer = Writer(engine, args.rate, args.seconds, f"LAG-{int(time.time())}-")
        lags: list[float] = []
        steps = 0
        writer.start()
        deadline = time.monotonic() + args.seconds + 600
        while (writer.is_alive() or writer.pending) and time.monotonic() < deadline:
            step(source, catalog, plan, warehouse, DATASET, max_seconds=1.0)
            steps += 1
            visible(observer, ref, writer, lags)
        writer.join()

        backlog = Writer(engine, 0.0, float("inf"), f"CATCH-{int(time.time())}-")
        with engine.begin() as connection:
            for n in range(args.catchup):
                backlog.change(connection, n)
        applied = 0
        started = time.monotonic()
        while args.catchup:
            result = step(source, catalog, plan, warehouse, DATASET, max_events=50_000, max_seconds=30.0)
            applied += sum(result.totals().values())
            if result.caught_up:
                break
        catchup_seconds = time.monotonic() - started
    engine.dispose()
    print(json.dumps({
        "date": today, "warehouse": args.warehouse, "job_delay_s": args.delay if args.warehouse == "emulator" else 0,
        "rate_per_s": args.rate, "seconds": args.seconds, "changes_written": writer.changes,
        "changes_seen": len(lags), "unseen": len(writer.pending), "capture_steps": steps,
        "lag_median_s": round(statistics.median(lags), 2) if lags else None,
        "lag_p95_s": round(statistics.quantiles(lags, n=20)[-1], 2) if len(lags) > 20 else None,
        "catchup_row_changes": applied, "catchup_seconds": round(catchup_seconds, 1),
        "catchup_row_changes_per_s": round(applied / catchup_seconds) if applied else None,
    }))


if __name__ == "__main__":
    main()
