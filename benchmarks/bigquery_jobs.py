"""BigQuery jobs per table load, under job latency (issue 10).

    PLEX_ETL_EMULATOR_DIR=.emulator .venv/bin/python -m benchmarks.bigquery_jobs [--delay 3]

Builds (or reuses) the demo Plex database `plexetl_bench_plex_<scale>` (benchmarks/run.py's
`ensure_demo`), starts the tests' BigQuery emulator (plex_etl_tests/bq_emulator.py) behind
`benchmarks/bq_latency_proxy.py` (every job takes `--delay` seconds, as on BigQuery), and
loads every included table through `BigQueryWarehouse`, one load per table over all its days
(a snapshot table: today). Counts the load and query jobs of each table load at the proxy and
prints one JSON line: table loads, load jobs, query jobs, jobs per table load (max), rows,
seconds, and the projected time of a full Plex load (one load per table, sequential) at 3 s
and 10 s per job: table loads x (fixed cost + jobs x delay) + rows x cost per row, the fixed
and per-row costs fitted (least squares) on this run's table loads outside their job waits.
Also the job waits of the chunk-per-job path it replaced (one load job per chunk + the swap).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Rows of the demo schema at factor 1 and Plex's tables.
FULL_PLEX_ROWS = 118_320_130


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.01, help="demo database scale (default 0.01)")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds each BigQuery job takes (default 3)")
    parser.add_argument("--days", type=int, default=400, help="days loaded per dated table (default 400)")
    parser.add_argument("--tables", type=int, default=0, help="load only the first N tables (0: all)")
    options = parser.parse_args(argv)

    from zoneinfo import ZoneInfo

    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from benchmarks.bq_latency_proxy import LatencyProxy
    from benchmarks.run import ensure_demo
    from plex_etl.catalog.model import load_catalog
    from plex_etl.catalog.plan import load_plan
    from plex_etl.extract.spec import load_mode, replicated_table
    from plex_etl.extract.stream import PartitionStream
    from plex_etl.sources import config_dir, get_source, with_database
    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client
    from plex_etl_tests import bq_emulator

    database = ensure_demo(options.scale)
    source = with_database(get_source("plex"), database)
    catalog = load_catalog(config_dir() / "plex.catalog.yaml")
    plan = load_plan(config_dir() / "plex.plan.yaml", "plex")
    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    first = today - dt.timedelta(days=options.days)
    tables = sorted(plan.included, key=lambda p: p.table)
    if options.tables:
        tables = tables[: options.tables]

    if not (bq_emulator.EMULATOR_DIR / ".installed").exists():
        bq_emulator.install()
    with tempfile.TemporaryDirectory(prefix="plexetl_bench_bq_") as tmp:
        process, emulator = bq_emulator.start(Path(tmp))
        proxy = LatencyProxy(emulator.endpoint, delay=options.delay)
        try:
            client = bigquery_client(emulator.project, "US", api_endpoint=proxy.start())
            warehouse = BigQueryWarehouse(client, "US", retry=DEFAULT_RETRY.with_timeout(120),
                                          job_retry=None, job_timeout=1800, staging_dir=tmp)
            per_load: list[dict[str, Any]] = []
            t0 = time.monotonic()
            for table_plan in tables:
                spec = replicated_table(catalog, plan, table_plan.table)
                start = today if table_plan.strategy == "snapshot" else first
                stream = PartitionStream(source, spec, start, today)
                before = proxy.snapshot()
                t1 = time.monotonic()
                result = warehouse.load(spec.target, stream, start, today, mode=load_mode(spec))
                after = proxy.snapshot()
                per_load.append({
                    "table": spec.target.name, "rows": result.rows, "bytes": result.bytes, "chunks": result.chunks,
                    "chunk_rows": spec.plan.chunk_rows, "seconds": round(time.monotonic() - t1, 2),
                    "load_jobs": after["load"] - before["load"], "query_jobs": after["query"] - before["query"],
                })
                print(json.dumps(per_load[-1]), file=sys.stderr, flush=True)
            seconds = time.monotonic() - t0
        finally:
            proxy.stop()
            bq_emulator.stop(process)

    rows = sum(p["rows"] for p in per_load)
    jobs = [p["load_jobs"] + p["query_jobs"] for p in per_load]
    loads = len(per_load)
    # The replaced path: one load job per chunk plus the swap, chunks at factor 1 from each
    # table's rows scaled up and its chunk size.
    old_jobs_full = sum(max(1, math.ceil(p["rows"] / options.scale / p["chunk_rows"])) + 1 for p in per_load)
    jobs_full = sum(jobs)  # one load per table: the same job count at any scale
    # Time outside the job waits, per table load: fixed + per row (least squares over the
    # table loads), to project the full database: loads x (fixed + jobs x delay) + rows x rate.
    xs = [p["rows"] for p in per_load]
    ys = [p["seconds"] - j * options.delay for p, j in zip(per_load, jobs, strict=True)]
    mx, my = sum(xs) / loads, sum(ys) / loads
    spread = sum((x - mx) ** 2 for x in xs)
    per_row = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0
    fixed = my - per_row * mx

    def projected_minutes(delay: float) -> float:
        return round((loads * fixed + jobs_full * delay + per_row * FULL_PLEX_ROWS) / 60, 1)

    summary = {
        "scale": options.scale,
        "delay_seconds_per_job": options.delay,
        "table_loads": loads,
        "load_jobs": sum(p["load_jobs"] for p in per_load),
        "query_jobs": sum(p["query_jobs"] for p in per_load),
        "jobs_per_table_load_max": max(jobs, default=0),
        "jobs_per_table_load_mean": round(sum(jobs) / loads, 2) if loads else 0,
        "rows": rows,
        "chunks": sum(p["chunks"] for p in per_load),
        "seconds": round(seconds, 1),
        "job_wait_seconds": round(sum(jobs) * options.delay, 1),
        "seconds_per_table_load_fixed": round(fixed, 2),
        "seconds_per_million_rows": round(per_row * 1e6, 2),
        "full_plex_rows": FULL_PLEX_ROWS,
        "projected_full_plex_minutes_at_3s": projected_minutes(3.0),
        "projected_full_plex_minutes_at_10s": projected_minutes(10.0),
        "full_plex_jobs": jobs_full,
        "full_plex_job_wait_minutes_at_3s": round(jobs_full * 3 / 60, 1),
        "full_plex_job_wait_minutes_at_10s": round(jobs_full * 10 / 60, 1),
        "chunk_per_job_path_full_plex_jobs": old_jobs_full,
        "chunk_per_job_path_job_wait_minutes_at_3s": round(old_jobs_full * 3 / 60, 1),
        "chunk_per_job_path_job_wait_minutes_at_10s": round(old_jobs_full * 10 / 60, 1),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
