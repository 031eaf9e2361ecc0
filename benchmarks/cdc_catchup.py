"""Catch-up of change capture, the worker's followed log against one-shot steps:
`python -m benchmarks.cdc_catchup [--rounds 3] [--changes 5000]`.

Each round, in a fresh process per way (`--way`, run by the parent), on the binlog MariaDB
with the Plex demo (scale 0.001) and the app orders captured, into a fresh local warehouse:
first copy, then `--changes` changes written (plex_etl.demo.capture.Writer, about 1.7 row
changes each), then the backlog applied until caught up, timed:
- `follow`: `Capture.step(follow=True)` back to back, as the worker (`plex-etl capture`) does;
- `step`: one-shot `plex_etl.cdc.apply.step` calls (max 50,000 row changes, 30 s each), as the
  sensor's job did before the worker.
The ways alternate round by round. Prints one JSON line per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from plex_etl.demo.capture import APP_ORDERS, DATASET, REPO, Writer, binlog_source, ensure_binlog_server

WAYS = ("follow", "step")


def run_way(way: str, database: str, changes: int) -> dict:
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.cdc.apply import Capture, step
    from plex_etl.mysql import create_engine
    from plex_etl.warehouse.local import LocalWarehouse
    from plex_etl_tests.cdc_support import capture_plan

    source = binlog_source(database)
    catalog, plan = load_source_catalog("plex")
    plan = capture_plan(plan, APP_ORDERS)
    with tempfile.TemporaryDirectory(prefix="plexetl_cdc_catchup_") as tmp:
        warehouse = LocalWarehouse(Path(tmp) / "w.duckdb")
        step(source, catalog, plan, warehouse, DATASET)  # first copy
        engine = create_engine(source)
        writer = Writer(engine, 0.0, 0.0, f"CU-{way}-{time.time_ns()}-")
        with engine.begin() as connection:
            for n in range(changes):
                writer.change(connection, n)
        engine.dispose()
        applied, started = 0, time.monotonic()
        if way == "follow":
            with Capture(source, catalog, plan, warehouse, DATASET) as capture:
                while True:
                    result = capture.step(follow=True)
                    applied += sum(result.totals().values())
                    if result.caught_up:
                        break
        else:
            while True:
                result = step(source, catalog, plan, warehouse, DATASET, max_events=50_000, max_seconds=30.0)
                applied += sum(result.totals().values())
                if result.caught_up:
                    break
        seconds = time.monotonic() - started
    return {"way": way, "row_changes": applied, "seconds": round(seconds, 2),
            "row_changes_per_s": round(applied / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=5000)
    prefix = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bench")
    parser.add_argument("--database", default=f"{prefix}_cdc")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(run_way(args.way, args.database, args.changes)), flush=True)
        return
    from plex_etl.demo.builder import build_demo

    ensure_binlog_server()
    source = binlog_source(args.database)
    build_demo(source, scale=0.001, days=30, seed=7, force=True,
               end_date=datetime.now(ZoneInfo(source.time_zone)).date(), log=lambda _m: None)
    rates: dict[str, list[int]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            output = subprocess.run(
                [sys.executable, "-m", "benchmarks.cdc_catchup", "--way", way, "--database", args.database,
                 "--changes", str(args.changes)], cwd=REPO, capture_output=True, text=True, check=True, timeout=900,
            ).stdout.strip().splitlines()[-1]
            print(output, flush=True)
            rates[way].append(json.loads(output)["row_changes_per_s"])
    print(json.dumps({f"median_row_changes_per_s_{way}": statistics.median(r) for way, r in rates.items()}))


if __name__ == "__main__":
    main()
