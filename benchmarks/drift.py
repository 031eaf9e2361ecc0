"""What schema drift handling costs a load (issue 24).

    PLEX_ETL_BENCH_DB_PREFIX=plexetl_bench_drift .venv/bin/python -m benchmarks.drift --rows 1000000 --runs 3

1. The live column read before every load (`extract.spec.live_replicated_table`: one mysqlclient
   connection, `SELECT DATABASE()`, the CHECK_CONSTRAINTS and COLUMNS lookups of the table and the
   tables it is read through), for every table of the Plex catalog, against a demo database
   (`<prefix>_plex`, built at scale 0.001 when missing).
2. The local warehouse's reload of one day, and of the whole table (the first partition's
   reload), with no retired column and with two retired columns holding a value in every row
   (their values carried to the replacing rows by key): a table of `--rows` rows over 100 days,
   upsert by an integer key. Both variants interleaved, run by run; seconds of `load()`.

On BigQuery the carry adds two statements (a temporary table, a join) to the one swap script the
load already runs: no extra job; the emulator's timings say nothing about BigQuery's, so none are
given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.spec import live_replicated_table
from plex_etl.mysql import raw_connection
from plex_etl.sources import get_source, with_database
from plex_etl.warehouse.base import PARTITION_COLUMN, TargetTable, WarehouseColumn
from plex_etl.warehouse.local import LocalWarehouse

PREFIX = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bench_drift")
DAYS = 100
FIRST = dt.date(2026, 1, 1)
ID = WarehouseColumn("id", pa.int64(), "INT64", "BIGINT")
NAME = WarehouseColumn("name", pa.string(), "STRING", "VARCHAR")
AMOUNT = WarehouseColumn("amount", pa.decimal128(12, 2), "NUMERIC(12, 2)", "DECIMAL(12,2)")
RETIRED = (WarehouseColumn("old_channel", pa.string(), "STRING", "VARCHAR"),
           WarehouseColumn("old_code", pa.int64(), "INT64", "BIGINT"))


def live_read(runs: int) -> None:
    from plex_etl.demo.builder import build_demo

    source = with_database(get_source("plex"), f"{PREFIX}_plex")
    build_demo(source, scale=0.001, days=30, seed=42, log=lambda _m: None)
    catalog, plan = load_source_catalog("plex")
    tables = sorted(p.table for p in plan.included)
    per_call = []
    for _ in range(runs):
        for table in tables:
            started = time.perf_counter()
            connection = raw_connection(source)  # as the asset does (defs/assets.py::live_spec)
            live_replicated_table(connection, catalog, plan, table)
            connection.close()
            per_call.append(time.perf_counter() - started)
    ms = sorted(1000 * s for s in per_call)
    print(f"\n1. live column read before a load, {len(tables)} Plex tables x {runs} runs ({source.database})")
    print("| median ms | p90 ms | max ms |\n| --- | --- | --- |")
    print(f"| {statistics.median(ms):.1f} | {ms[int(0.9 * len(ms))]:.1f} | {ms[-1]:.1f} |")


def table(rows: int, retired: bool) -> pa.RecordBatch:
    """`rows` rows over DAYS days, with the retired columns (a value in every row) when `retired`."""
    import numpy as np

    ids = np.arange(rows, dtype=np.int64)
    columns = {"id": pa.array(ids), "name": pa.array(ids.astype(str)),
               "amount": pa.array((ids % 100_000).astype(np.int32)).cast(pa.decimal128(12, 2))}
    if retired:
        columns |= {"old_channel": pa.array(["web"] * rows), "old_code": pa.array(ids)}
    columns[PARTITION_COLUMN] = pa.array(np.datetime64(FIRST, "D") + ids * DAYS // rows)
    return pa.RecordBatch.from_pydict(columns)


def reload(rows: int, runs: int) -> None:
    import pyarrow.compute as pc

    day = FIRST + dt.timedelta(days=DAYS // 2)
    names = [f.name for f in TargetTable("bench", "t", (ID, NAME, AMOUNT), ("id",)).arrow_schema]
    current = table(rows, False).select(names)  # MySQL now: the retired columns are gone
    one_day = current.filter(pc.equal(current.column(PARTITION_COLUMN), pa.scalar(day, pa.date32())))
    with tempfile.TemporaryDirectory(prefix="plexetl_bench_drift_") as tmp:
        results: dict[tuple[str, bool], list[float]] = {}
        for run in range(runs):
            for retired in (False, True):
                warehouse = LocalWarehouse(Path(tmp) / f"w{run}{retired}.duckdb", memory_limit="128MB", threads=1)
                before = TargetTable("bench", "t", (ID, NAME, AMOUNT, *(RETIRED if retired else ())), ("id",))
                after = TargetTable("bench", "t", (ID, NAME, AMOUNT), ("id",))
                full = table(rows, retired)
                warehouse.load(before, [full.slice(i, 100_000) for i in range(0, rows, 100_000)], None, None,
                               mode="upsert")
                started = time.perf_counter()
                result = warehouse.load(after, [one_day], day, day, mode="upsert")
                results.setdefault(("one day", retired), []).append(time.perf_counter() - started)
                assert result.retired_columns == (tuple(c.name for c in RETIRED) if retired else ())
                started = time.perf_counter()
                warehouse.load(after, [current.slice(i, 100_000) for i in range(0, rows, 100_000)], None, None,
                               mode="upsert")
                results.setdefault(("whole table", retired), []).append(time.perf_counter() - started)
                if retired:
                    kept = warehouse.query("SELECT COUNT(old_channel) AS n FROM bench.t").column(0)[0].as_py()
                    assert kept == rows, kept
        print(f"\n2. local warehouse reload, {rows:,}-row table over {DAYS} days, upsert by key, {runs} runs "
              "(seconds of load())")
        print("| reload | no retired column | 2 retired columns, carried | ratio | runs (s) |")
        print("| --- | --- | --- | --- | --- |")
        for what in ("one day", "whole table"):
            plain, carried = (statistics.median(results[(what, r)]) for r in (False, True))
            runs_text = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(results[(what, False)], results[(what, True)],
                                                                        strict=True))
            print(f"| {what} | {plain:.2f} | {carried:.2f} | {carried / plain:.2f}x | {runs_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip", default="", help="live,reload")
    args = parser.parse_args()
    if "live" not in args.skip:
        live_read(args.runs)
    if "reload" not in args.skip:
        reload(args.rows, args.runs)


if __name__ == "__main__":
    main()
