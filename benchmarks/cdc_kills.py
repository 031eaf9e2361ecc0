"""Change capture survives SIGKILLs: `python -m benchmarks.cdc_kills [--kills 5] [--rate 30]`.

On the binlog MariaDB (scripts/ensure-mariadb-binlog.sh) with the Plex demo at scale 0.001
and the app orders captured, into a local warehouse: a writer commits orders (inserts,
updates, deletes; see benchmarks.cdc_lag.Writer) while a capture process runs its steps
back to back and is SIGKILLed at a random moment, `--kills` times, each time restarted.
Then the writer stops, the capture catches up, and every captured table is compared with
MySQL: whole-table reconciliation, and row for row with what the polling path loads from
the same data. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from benchmarks.cdc_lag import APP_ORDERS, DATASET, REPO, Writer, binlog_source, captured_plan
from plex_etl.cdc.apply import step
from plex_etl.demo.builder import build_demo
from plex_etl.extract.spec import load_mode, read_bounds, replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import create_engine
from plex_etl.reconcile import reconcile_table
from plex_etl.warehouse.local import LocalWarehouse


def worker(database: str, warehouse: str) -> None:
    """The capture process: steps back to back until killed."""
    source = binlog_source(database)
    catalog, plan = captured_plan()
    store = LocalWarehouse(warehouse)
    while True:
        step(source, catalog, plan, store, DATASET, max_seconds=1.0)


def rows(warehouse: LocalWarehouse, table: str) -> list[str]:
    result = warehouse.query(f"SELECT * EXCLUDE (_etl_loaded_at) FROM {DATASET}.{table}").to_pylist()
    return sorted(repr(tuple(r.values())) for r in result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--database", default="plexetl_bench_cdc")
    parser.add_argument("--worker", metavar="WAREHOUSE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.database, args.worker)
        return

    subprocess.run([str(REPO / "scripts" / "ensure-mariadb-binlog.sh")], check=True, timeout=300)
    source = binlog_source(args.database)
    today = datetime.now(ZoneInfo(source.time_zone)).date()
    build_demo(source, scale=0.001, days=30, seed=7, force=True, end_date=today, log=lambda _m: None)
    catalog, plan = captured_plan()
    engine = create_engine(source)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cdc.duckdb"
        warehouse = LocalWarehouse(path)
        step(source, catalog, plan, warehouse, DATASET)  # first copy and start position
        writer = Writer(engine, args.rate, float("inf"), f"KILL-{int(time.time())}-")
        writer.start()
        started = time.monotonic()
        for _ in range(args.kills):
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cdc_kills", "--database", args.database,
                                     "--worker", str(path)], cwd=REPO, env=os.environ.copy())
            time.sleep(random.uniform(1.0, 5.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        writer.seconds = 0.0  # the writer stops after its current change
        writer.join(timeout=30)
        for _ in range(50):
            if step(source, catalog, plan, warehouse, DATASET, max_events=50_000, max_seconds=30.0).caught_up:
                break
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
        "kills": args.kills, "seconds": round(time.monotonic() - started, 1), "changes_written": writer.changes,
        "tables": results, "all_equal": all(r["reconciled"] and r["row_for_row"] for r in results.values()),
    }))


if __name__ == "__main__":
    main()
