"""Change capture shown on the demo: `make demo-capture` (`python -m plex_etl.demo.capture`).

Starts the project's MariaDB with the binary log (scripts/ensure-mariadb-binlog.sh, port
3407), builds the Plex demo there, turns capture on for the app orders in a copy of the
configuration (`.demo-capture/config`), runs the capture worker (`plex-etl capture --source
plex`, reporting to the Dagster instance of $DAGSTER_HOME), makes a few writes (a new order
with its line, an update, a delete) and prints how long each took to be readable in the local
warehouse. Then it stops the worker with SIGTERM and prints how to see it all in the UI.

The helpers (`capture_config`, `worker_environment`, `start_worker`, `Writer`) are also what the
change-capture benchmarks and tests use to run the worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from plex_etl.sources import PACKAGE_CONFIG_DIR, Source, get_source

REPO = Path(__file__).resolve().parents[2]
BINLOG_SCRIPT = REPO / "scripts" / "ensure-mariadb-binlog.sh"
BINLOG_PORT = int(os.environ.get("PLEX_ETL_BINLOG_PORT", "3407"))
APP_ORDERS = ("apppedidos", "apppedidoslineas", "apppedidosmovimientos", "apppedidospagos", "apppedidoslineasfact")
DATASET = "plex_analytics"
DEMO_WRITES = ("insert", "update", "insert", "delete", "update")


def binlog_source(database: str) -> Source:
    """The plex source on the binlog MariaDB, database `database`."""
    return dataclasses.replace(get_source("plex"), database=database, port=BINLOG_PORT)


def capture_config(directory: Path, tables: tuple[str, ...] = APP_ORDERS) -> Path:
    """A copy of the package's configuration in `directory`/config with `capture: binlog` on
    `tables` of the plex plan; returns the config directory (PLEX_ETL_CONFIG_DIR)."""
    config = directory / "config"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(PACKAGE_CONFIG_DIR, config)
    plan = config / "plex.plan.yaml"
    text = plan.read_text()
    for table in tables:
        entry = f"  {table}:\n"
        if entry not in text:
            raise ValueError(f"{plan}: no entry for {table}")
        text = text.replace(entry, f"{entry}    capture: binlog\n", 1)
    plan.write_text(text)
    return config


def worker_environment(config: Path, database: str, warehouse: Mapping[str, str],
                       dagster_home: Path | None) -> dict[str, str]:
    """The environment of a worker process on the binlog MariaDB: `warehouse` holds the
    PLEX_ETL_WAREHOUSE... variables; without `dagster_home` it does not report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLEX_ETL_", "PLEX_MYSQL_", "DAGSTER_HOME"))}
    env.update(PLEX_ETL_CONFIG_DIR=str(config), PLEX_MYSQL_DATABASE=database, PLEX_MYSQL_PORT=str(BINLOG_PORT),
               **warehouse)
    if dagster_home is not None:
        dagster_home.mkdir(parents=True, exist_ok=True)
        (dagster_home / "dagster.yaml").touch()
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


def start_worker(env: Mapping[str, str], *arguments: str, log: Path | None = None) -> subprocess.Popen:
    """`plex-etl capture --source plex ARGUMENTS` in the background; its output to `log`."""
    command = [sys.executable, "-m", "plex_etl.cli", "capture", "--source", "plex", *arguments]
    if "DAGSTER_HOME" not in env:
        command.append("--no-report")
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 -- the child's
    return subprocess.Popen(command, env=dict(env), stdout=output, stderr=subprocess.STDOUT, cwd=REPO)


def stop_worker(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then wait (SIGKILL after `timeout`); the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return int(process.returncode)


class Writer(threading.Thread):
    """Commits changes of app orders at a steady rate (`rate` per second, 0: as fast as it can)
    for `seconds`: 60% new orders with a line, 30% updates of an order's amount, 10% deletes of
    an order and its lines. `pending` maps each order to (its expected amount or None when
    deleted, the commit time) until `seen` takes it."""

    def __init__(self, engine: sa.Engine, rate: float, seconds: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.rate, self.seconds, self.prefix = engine, rate, seconds, prefix
        self.pending: dict[str, tuple[float | None, float]] = {}
        self.live: list[str] = []
        self.lock = threading.Lock()
        self.changes = 0
        self.elapsed = 0.0
        self.template: dict[str, Any] | None = None

    def change(self, connection: sa.Connection, n: int, kind: str | None = None) -> tuple[str, float | None, str]:
        """One change in `connection`'s transaction, of `kind` (insert, update, delete; by default
        drawn as the class says): (order, its amount or None, what was done)."""
        roll = random.random()
        if kind is not None:
            roll = {"insert": 0.0, "update": 0.7, "delete": 0.95}[kind]
        if not self.live or (kind is None and (roll < 0.6 or len(self.live) < 10)) or roll < 0.6:
            order = f"{self.prefix}{n}"
            if self.template is None:  # an existing order's references, read once (an INSERT ... SELECT
                # per change would lock the row read, and writers in parallel deadlock on it)
                order_row = connection.execute(sa.text(
                    "SELECT IDPedidoOrigen, IDOrigen, IDRed, IdEstado FROM apppedidos ORDER BY IDPedido LIMIT 1")).one()
                product = connection.execute(sa.text(
                    "SELECT IdProducto FROM apppedidoslineas ORDER BY IdRegistro LIMIT 1")).scalar()
                self.template = {**order_row._asdict(), "IdProducto": product}
            connection.execute(sa.text(
                "INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, IDRed, Fecha, IdEstado, FechaEstado, "
                "cli_nombre, Importe) VALUES (:order, :IDPedidoOrigen, :IDOrigen, :IDRed, NOW(), :IdEstado, NULL, "
                "'writer', 10)"), {"order": order, **self.template})
            connection.execute(sa.text(
                "INSERT INTO apppedidoslineas (IDPedido, IdProducto, Cantidad) VALUES (:order, :IdProducto, 1)"),
                {"order": order, "IdProducto": self.template["IdProducto"]})
            self.live.append(order)
            return order, 10.0, "new order with a line"
        order = random.choice(self.live)
        if roll < 0.9:
            amount = float(n % 1000) + 0.5
            connection.execute(sa.text(f"UPDATE apppedidos SET Importe = {amount} WHERE IDPedido = '{order}'"))
            return order, amount, f"amount set to {amount}"
        connection.execute(sa.text(f"DELETE FROM apppedidoslineas WHERE IDPedido = '{order}'"))
        connection.execute(sa.text(f"DELETE FROM apppedidos WHERE IDPedido = '{order}'"))
        self.live.remove(order)
        return order, None, "order and its lines deleted"

    def run(self) -> None:
        interval = 1.0 / self.rate if self.rate else 0.0
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.seconds:
            with self.engine.begin() as connection:
                order, amount, _what = self.change(connection, n)
            with self.lock:
                self.pending[order] = (amount, time.time())
            n += 1
            self.changes = n
            if interval:
                time.sleep(max(0.0, start + n * interval - time.monotonic()))
        self.elapsed = time.monotonic() - start

    def seen(self, landed: Mapping[str, float], at: float) -> list[float]:
        """Lags of the pending changes that `landed` (order -> amount, as read at time `at`) shows."""
        lags = []
        with self.lock:
            for order, (amount, committed) in list(self.pending.items()):
                if (amount is None and order not in landed) or (amount is not None and landed.get(order) == amount):
                    lags.append(at - committed)
                    del self.pending[order]
        return lags


def landed_orders(warehouse: object, table_ref: str, prefix: str) -> dict[str, float]:
    """Order -> amount of the orders whose id starts with `prefix` in the warehouse's apppedidos."""
    rows = warehouse.query(  # type: ignore[attr-defined]
        f"SELECT IDPedido, Importe FROM {table_ref} WHERE IDPedido LIKE '{prefix}%'").to_pylist()
    return {r["IDPedido"]: float(r["Importe"]) for r in rows}


def ensure_binlog_server() -> None:
    subprocess.run([str(BINLOG_SCRIPT)], check=True, timeout=300)


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `condition()` until true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def main() -> None:
    from plex_etl.demo.builder import build_demo
    from plex_etl.mysql import create_engine
    from plex_etl.warehouse.local import LocalWarehouse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="plex_demo_capture")
    parser.add_argument("--scale", type=float, default=0.001)
    parser.add_argument("--writes", type=int, default=5, help="writes whose lag is printed")
    args = parser.parse_args()

    home = REPO / ".demo-capture"
    home.mkdir(exist_ok=True)
    ensure_binlog_server()
    source = binlog_source(args.database)
    print(f"building the Plex demo, binary log on: {source.describe()} ...", flush=True)
    build_demo(source, scale=args.scale, days=30, seed=7, force=True,
               end_date=datetime.now(ZoneInfo(source.time_zone)).date(), log=lambda _m: None)
    config = capture_config(home)
    path = home / "warehouse.duckdb"
    path.unlink(missing_ok=True)
    dagster_home = Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else None
    env = worker_environment(config, args.database, {"PLEX_ETL_WAREHOUSE": "local",
                                                     "PLEX_ETL_LOCAL_WAREHOUSE": str(path)}, dagster_home)
    log = home / "worker.log"
    log.unlink(missing_ok=True)
    print(f"capture on for {', '.join(APP_ORDERS)} ({config}/plex.plan.yaml); starting "
          f"`plex-etl capture --source plex` (log: {log})", flush=True)
    worker = start_worker(env, log=log)
    warehouse = LocalWarehouse(path)
    try:
        wait_for(lambda: len(_positions(warehouse)) == len(APP_ORDERS) or worker.poll() is not None, 120,
                 "the worker's first copy")
        if worker.poll() is not None:
            raise SystemExit(f"the worker stopped (exit {worker.returncode}):\n{log.read_text()[-3000:]}")
        print("first copy done; writing ...", flush=True)
        engine = create_engine(source)
        writer = Writer(engine, 0.0, 0.0, f"DEMO-{int(time.time())}-")
        for n in range(args.writes):
            with engine.begin() as connection:
                order, amount, what = writer.change(connection, n, DEMO_WRITES[n % len(DEMO_WRITES)])
            with writer.lock:
                writer.pending[order] = (amount, time.time())
            lags: list[float] = []
            while not lags:
                at = time.time()
                lags = writer.seen(landed_orders(warehouse, f"{DATASET}.plex_apppedidos", order), at)
                if not lags and at - writer.pending[order][1] > 60:
                    raise SystemExit(f"{order} not in the warehouse after 60 s; see {log}")
                time.sleep(0.05)
            print(f"  {order} {what}: readable in the warehouse {lags[0]:.2f} s after its commit in MySQL",
                  flush=True)
            time.sleep(random.uniform(0.5, 1.5))
        engine.dispose()
    finally:
        code = stop_worker(worker)
    print(f"worker stopped by SIGTERM (exit {code})")
    print("In the UI: PLEX_ETL_CONFIG_DIR=.demo-capture/config PLEX_MYSQL_PORT=3407 "
          f"PLEX_MYSQL_DATABASE={args.database} PLEX_ETL_LOCAL_WAREHOUSE={path} make dev: the app orders show "
          "their capture reports (lag_seconds, position) and the binlog_capture check.")


def _positions(warehouse: object) -> dict[str, str]:
    try:
        return warehouse.cdc_positions(DATASET, "plex")  # type: ignore[attr-defined]
    except Exception:  # not created yet
        return {}


if __name__ == "__main__":
    main()
