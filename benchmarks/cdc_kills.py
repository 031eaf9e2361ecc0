"""The capture worker survives SIGKILLs: `python -m benchmarks.cdc_kills [--kills 10] [--rate 30]`.

On the binlog MariaDB (scripts/ensure-mariadb-binlog.sh) with the Plex demo at scale 0.001
and the app orders captured, into a local warehouse: a writer commits changes of orders
(inserts, updates, deletes; plex_etl.demo.capture.Writer) while the worker (`plex-etl capture
--source plex`, its own process, reporting to a Dagster instance) is SIGKILLed at a random
moment 0.2-4 s after it holds its lock and captures, and started again, `--kills` times (its
MySQL lock is released with its connection: the next start takes it, waiting up to 60 s). Then the writer
stops, the worker runs until it has caught up and stops on SIGTERM, and every captured table is
compared with MySQL: whole-table reconciliation, and row for row, every column, with what the
polling path loads from the same data. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from plex_etl.catalog.store import load_source_catalog
from plex_etl.demo.builder import build_demo
from plex_etl.demo.capture import (
    APP_ORDERS,
    DATASET,
    Writer,
    binlog_source,
    capture_config,
    ensure_binlog_server,
    start_worker,
    stop_worker,
    wait_for,
    worker_environment,
)
from plex_etl.extract.spec import load_mode, read_bounds, replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import create_engine
from plex_etl.reconcile import reconcile_table
from plex_etl.warehouse.local import LocalWarehouse

RUNNING = "INFO capture of plex: "  # the worker's first line once it holds its lock


def rows(warehouse: LocalWarehouse, table: str) -> list[str]:
    result = warehouse.query(f"SELECT * EXCLUDE (_etl_loaded_at) FROM {DATASET}.{table}").to_pylist()
    return sorted(repr(tuple(r.values())) for r in result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=30.0)
    prefix = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bench")
    parser.add_argument("--database", default=f"{prefix}_cdc")
    args = parser.parse_args()

    ensure_binlog_server()
    source = binlog_source(args.database)
    today = datetime.now(ZoneInfo(source.time_zone)).date()
    build_demo(source, scale=0.001, days=30, seed=7, force=True, end_date=today, log=lambda _m: None)
    engine = create_engine(source)
    with tempfile.TemporaryDirectory(prefix="plexetl_cdc_kills_") as tmp:
        config = capture_config(Path(tmp))
        path = Path(tmp) / "cdc.duckdb"
        env = worker_environment(config, args.database, {"PLEX_ETL_WAREHOUSE": "local",
                                                         "PLEX_ETL_LOCAL_WAREHOUSE": str(path)},
                                 Path(tmp) / "dagster_home")
        log = Path(tmp) / "worker.log"
        warehouse = LocalWarehouse(path)
        writer = Writer(engine, args.rate, float("inf"), f"KILL-{int(time.time())}-")
        writer.start()
        started = time.monotonic()
        for _ in range(args.kills):
            starts = log.read_text().count(RUNNING) if log.exists() else 0
            worker = start_worker(env, "--lock-wait", "60", log=log)
            wait_for(lambda n=starts, w=worker: log.read_text().count(RUNNING) > n or w.poll() is not None, 120,
                     "the worker's start")
            time.sleep(random.uniform(0.2, 4.0))  # then killed at any moment of its work
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
        writer.seconds = 0.0  # the writer stops after its current change
        writer.join(30)
        end = log.read_text().count("caught up at") if log.exists() else 0
        worker = start_worker(env, "--lock-wait", "60", log=log)
        try:
            wait_for(lambda: log.read_text().count("caught up at") > end or worker.poll() is not None, 300,
                     "the last worker's catch-up")
            time.sleep(2.0)  # a heartbeat or two: whatever the writer's last commit was, it is in
        finally:
            code = stop_worker(worker)
        catalog, plan = load_source_catalog("plex")  # the same selects and day rules as the worker's plan
        polled = LocalWarehouse(Path(tmp) / "polled.duckdb")
        results = {}
        with engine.connect() as connection:
            for table in APP_ORDERS:
                spec = replicated_table(catalog, plan, table, DATASET)
                reconciled = reconcile_table(connection, warehouse, spec, today).equal
                lo, hi = read_bounds(spec, plan.first_day, today, today, plan.first_partition(today))
                polled.load(spec.target, PartitionStream(source, spec, lo, hi), lo, hi, load_mode(spec))
                same = rows(warehouse, spec.target.name) == rows(polled, spec.target.name)
                results[table] = {"reconciled": reconciled, "row_for_row": same}
    engine.dispose()
    print(json.dumps({
        "date": str(today), "kills": args.kills, "seconds": round(time.monotonic() - started, 1),
        "changes_written": writer.changes, "last_stop_exit_code": code,
        "tables": results, "all_equal": all(r["reconciled"] and r["row_for_row"] for r in results.values()),
    }))


if __name__ == "__main__":
    main()
