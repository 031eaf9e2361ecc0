"""Change-capture lag and catch-up of the capture worker: `python -m benchmarks.cdc_lag [--rate 20 --rate 200]`.

On the binlog MariaDB (scripts/ensure-mariadb-binlog.sh, port 3407) with the Plex demo at
scale 0.001 and the app orders captured, the worker runs as users run it: `plex-etl capture
--source plex` in its own process, reporting to a Dagster instance (a temporary DAGSTER_HOME),
into a local warehouse, or with `--warehouse emulator` into the tests' BigQuery emulator
(plex_etl_tests/bq_emulator.py, PLEX_ETL_EMULATOR_DIR) behind benchmarks/bq_latency_proxy.py:
every job the worker runs takes `--delay` seconds (3), as on BigQuery; the benchmark's own
reads query the emulator directly, without that delay.

1. Lag, per `--rate`: a writer commits changes of app orders at that many per second for
   `--seconds` (60% new orders with a line, 30% updates of the amount, 10% deletes of an order
   and its lines; plex_etl.demo.capture.Writer) while the benchmark reads the warehouse every
   `--poll` seconds: a change is visible when its order is there with the new amount, or gone.
   Lag = the read that first shows it - the change's commit in MySQL (an overestimate by up to
   `--poll`).
2. Catch-up: the worker is stopped (SIGTERM), `--catchup` changes are written, the worker is
   started again; the rate is the row changes it applied per second until it caught up, as the
   worker logs it ("caught up at ...").

Prints one JSON line per rate and one for the catch-up. The figures go to docs/benchmarks.md, *Change capture*.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from plex_etl.demo.builder import build_demo
from plex_etl.demo.capture import (
    APP_ORDERS,
    DATASET,
    Writer,
    binlog_source,
    capture_config,
    ensure_binlog_server,
    landed_orders,
    start_worker,
    stop_worker,
    wait_for,
    worker_environment,
)
from plex_etl.mysql import create_engine
from plex_etl.warehouse.local import LocalWarehouse

CAUGHT_UP = re.compile(r"caught up at \S+: ([\d,]+) row changes in ([\d.]+) s")


@contextlib.contextmanager
def warehouses(kind: str, tmp: Path, delay: float) -> Iterator[tuple[dict[str, str], Any, str]]:
    """(the worker's warehouse variables, the warehouse the benchmark reads, apppedidos' reference)."""
    if kind == "local":
        path = tmp / "cdc.duckdb"
        yield ({"PLEX_ETL_WAREHOUSE": "local", "PLEX_ETL_LOCAL_WAREHOUSE": str(path)}, LocalWarehouse(path),
               f"{DATASET}.plex_apppedidos")
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
        direct = BigQueryWarehouse(bigquery_client(emulator.project, "US", api_endpoint=emulator.endpoint), "US",
                                   retry=DEFAULT_RETRY.with_timeout(120), job_retry=None, job_timeout=600)
        yield ({"PLEX_ETL_WAREHOUSE": "bigquery", "PLEX_ETL_GCP_PROJECT": emulator.project,
                "PLEX_ETL_BIGQUERY_LOCATION": "US", "PLEX_ETL_BIGQUERY_ENDPOINT": proxy.start()},
               direct, f"`{emulator.project}.{DATASET}.plex_apppedidos`")
    finally:
        proxy.stop()
        bq_emulator.stop(process)


def positions(warehouse: Any) -> dict[str, str]:
    try:
        return warehouse.cdc_positions(DATASET, "plex")
    except Exception:  # the positions table is not there yet
        return {}


def measure_lag(engine: Any, rate: float, seconds: float, poll: float, observe: Callable[[str], dict]) -> dict:
    """Writers at `rate` changes/s in all (one per 40/s: a commit waits for the server's log
    flush), the warehouse read every `poll` seconds."""
    count = max(1, math.ceil(rate / 40))
    stamp = int(time.time())
    writers = [Writer(engine, rate / count, seconds, f"LAG{int(rate)}-{stamp}-{i}-") for i in range(count)]
    prefix = f"LAG{int(rate)}-{stamp}-"
    lags: list[float] = []
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + seconds + 300
    while any(w.is_alive() or w.pending for w in writers) and time.monotonic() < deadline:
        at = time.time()  # the read shows the table as it is from now on
        landed = observe(prefix)
        for writer in writers:
            lags += writer.seen(landed, at)
        time.sleep(max(0.0, poll - (time.time() - at)))
    for writer in writers:
        writer.join()
    written = sum(w.changes for w in writers)
    elapsed = max(w.elapsed for w in writers)
    return {
        "rate_per_s": rate, "seconds": seconds, "writers": count, "changes_written": written,
        "write_rate_per_s": round(written / elapsed, 1) if elapsed else None,
        "changes_seen": len(lags), "unseen": sum(len(w.pending) for w in writers),
        "lag_median_s": round(statistics.median(lags), 2) if lags else None,
        "lag_p95_s": round(statistics.quantiles(lags, n=20)[-1], 2) if len(lags) > 20 else None,
        "lag_max_s": round(max(lags), 2) if lags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="changes per second (repeatable; 20 and 200)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--catchup", type=int, default=5000, help="changes written while stopped (0: skip)")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between the benchmark's reads")
    prefix = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bench")
    parser.add_argument("--database", default=f"{prefix}_cdc")
    parser.add_argument("--warehouse", choices=("local", "emulator"), default="local")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds each emulator job takes")
    args = parser.parse_args()
    rates = args.rate or [20.0, 200.0]

    ensure_binlog_server()
    source = binlog_source(args.database)
    today = datetime.now(ZoneInfo(source.time_zone)).date()
    build_demo(source, scale=0.001, days=30, seed=7, force=True, end_date=today, log=lambda _m: None)
    engine = create_engine(source)
    with tempfile.TemporaryDirectory(prefix="plexetl_cdc_bench_") as tmp, \
            warehouses(args.warehouse, Path(tmp), args.delay) as (variables, observer, ref):
        env = worker_environment(capture_config(Path(tmp)), args.database, variables, Path(tmp) / "dagster_home")
        log = Path(tmp) / "worker.log"

        def observe(prefix: str) -> dict:
            return landed_orders(observer, ref, prefix)

        worker = start_worker(env, log=log)
        try:
            wait_for(lambda: len(positions(observer)) == len(APP_ORDERS) or worker.poll() is not None, 600,
                     "the worker's first copy")
            if worker.poll() is not None:
                raise SystemExit(f"the worker stopped (exit {worker.returncode}):\n{log.read_text()[-3000:]}")
            for rate in rates:
                figures = measure_lag(engine, rate, args.seconds, args.poll, observe)
                print(json.dumps({"date": str(today), "warehouse": args.warehouse,
                                  "job_delay_s": args.delay if args.warehouse == "emulator" else 0, **figures}),
                      flush=True)
        finally:
            code = stop_worker(worker)
        if args.catchup:
            backlog = Writer(engine, 0.0, float("inf"), f"CATCH-{int(time.time())}-")
            with engine.begin() as connection:
                for n in range(args.catchup):
                    backlog.change(connection, n)
            log.write_text("")
            worker = start_worker(env, log=log)
            try:
                wait_for(lambda: CAUGHT_UP.search(log.read_text()) or worker.poll() is not None, 600,
                         "the worker's catch-up")
            finally:
                stop_worker(worker)
            found = CAUGHT_UP.search(log.read_text())
            if found is None:
                raise SystemExit(f"the worker did not catch up:\n{log.read_text()[-3000:]}")
            applied, seconds = int(found[1].replace(",", "")), float(found[2])
            print(json.dumps({"date": str(today), "warehouse": args.warehouse, "catchup_changes": args.catchup,
                              "catchup_row_changes": applied, "catchup_seconds": seconds,
                              "catchup_row_changes_per_s": round(applied / seconds) if seconds else None,
                              "first_stop_exit_code": code}), flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
