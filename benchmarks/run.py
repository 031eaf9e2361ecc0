"""Throughput and memory benchmark (issues 4 and 6): plex_etl side by side with the baselines.

    .venv/bin/python -m benchmarks.run            # everything, medians of 3 runs
    .venv/bin/python -m benchmarks.run --help     # sizes, runs, what to skip

Builds (or reuses) the bench table (`plexetl_bench_table_<rows>.bench`, 12 columns, see
bench_table.py) and the demo Plex databases `plexetl_bench_plex_<scale>`, then runs every
measurement in a fresh process (benchmarks/worker.py: peak RSS counts the imports and
nothing leaks from one run into the next). Runs are interleaved round by round so that
the noise of a shared machine hits every method alike. Prints, with medians:
1. the side by side table on the bench table (rows/s, peak RSS) and the ratios;
2. memory: one 1M-row partition end to end into the local warehouse, next to an idle
   interpreter with the same imports, and extraction RSS on the small and large table;
3. time against rows across the demo scales (linear fit) and the projection for the
   full Plex database at factor 1.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measure:
    label: str
    method: str
    args: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.runs[0]["rows"] if self.runs else 0

    @property
    def rate(self) -> float:
        return statistics.median(r["rows"] / r["seconds"] for r in self.runs) if self.runs else 0.0

    @property
    def seconds(self) -> float:
        return statistics.median(r["seconds"] for r in self.runs) if self.runs else 0.0

    @property
    def rss(self) -> float:
        return statistics.median(r["peak_rss_mb"] for r in self.runs) if self.runs else 0.0


def run_worker(method: str, args: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", method, json.dumps(args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{method} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def measure_rounds(measures: list[Measure], runs: int) -> None:
    for round_ in range(1, runs + 1):
        for m in measures:
            result = run_worker(m.method, m.args)
            m.runs.append(result)
            print(f"  round {round_}/{runs} {m.label}: {result['rows']:,} rows in {result['seconds']:.2f} s, "
                  f"{result['rows'] / max(result['seconds'], 1e-9) / 1000:,.0f}k rows/s, "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)


def ensure_demo(scale: float) -> str:
    """The demo Plex database at `scale` (built when missing); returns its name."""
    import sqlalchemy as sa

    from plex_etl.demo.builder import MARKER_TABLE, build_demo
    from plex_etl.mysql import create_engine
    from plex_etl.sources import get_source, with_database

    database = f"plexetl_bench_plex_{str(scale).replace('.', '_')}"
    source = with_database(get_source("plex"), database)
    engine = create_engine(with_database(source, ""))
    try:
        with engine.connect() as con:
            built = con.execute(
                sa.text("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :d AND table_name = :t"),
                {"d": database, "t": MARKER_TABLE},
            ).scalar()
    finally:
        engine.dispose()
    if not built:
        build_demo(source, scale=scale, force=True, log=lambda text: print(text.splitlines()[-1]))
    return database


def fmt_rate(rate: float) -> str:
    return f"{rate / 1000:,.0f}k"


def print_table(measures: list[Measure]) -> None:
    print(f"| {'method':<58} | {'rows':>10} | {'rows/s (median)':>15} | {'peak RSS MB':>11} | runs (k rows/s) |")
    print(f"| {'-' * 58} | {'-' * 10} | {'-' * 15} | {'-' * 11} | --- |")
    for m in measures:
        runs = ", ".join(f"{r['rows'] / r['seconds'] / 1000:.0f}" for r in m.runs)
        print(f"| {m.label:<58} | {m.rows:>10,} | {fmt_rate(m.rate):>15} | {m.rss:>11,.0f} | {runs} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the bench table (issue 6: 5M)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="rows of the memory partition (issue 4)")
    parser.add_argument("--slow-rows", type=int, default=300_000,
                        help="rows read by the slow baselines (PyMySQL, mysqlclient cursor, dlt)")
    parser.add_argument("--bigquery-rows", type=int, default=1_000_000, help="bench table used for the emulator")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scales", default="0.01,0.03,0.1")
    parser.add_argument("--skip", default="", help="comma list of: baselines,bigquery,memory,scales")
    options = parser.parse_args(argv)
    skip = set(filter(None, options.skip.split(",")))
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_table import ensure_bench_table

    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}, python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for rows in sorted({options.rows, options.memory_rows, options.bigquery_rows}):
        ensure_bench_table(rows)
    big = {"table_rows": options.rows}
    slow = {"table_rows": options.rows, "limit_rows": options.slow_rows}

    # 1. side by side on the bench table
    measures = [
        Measure("plex_etl extraction to Arrow", "plex_extract", big),
        Measure("plex_etl end to end, local warehouse (DuckDB)", "plex_local", big),
        Measure("connectorx read_sql(return_type='arrow')", "connectorx", big),
        Measure("prototype: plex_etl batches via connectorx arrow_stream (issue 14)", "plex_cx_stream", big),
    ]
    if "baselines" not in skip:
        measures += [
            Measure("connectorx, 2 PK ranges (no shared snapshot; data point)", "connectorx_ranges", big),
            Measure(f"PyMySQL SSCursor loop to Arrow (first {options.slow_rows:,})", "pymysql_sscursor", slow),
            Measure(f"mysqlclient SSCursor loop to Arrow (first {options.slow_rows:,})", "mysqlclient_sscursor", slow),
            Measure(f"dlt sql_table(backend='pyarrow') (first {options.slow_rows:,})", "dlt_pyarrow", slow),
        ]
    emulator = None
    if "bigquery" not in skip:
        from plex_etl_tests import bq_emulator

        if not bq_emulator._installed():
            bq_emulator.install()
        emulator_dir = Path(tempfile.mkdtemp(prefix="plexetl_bench_bq_"))
        emulator, info = bq_emulator.start(emulator_dir)
        measures.append(Measure(
            f"plex_etl end to end, BigQuery load path (emulator, {options.bigquery_rows:,} rows)", "plex_bigquery",
            {"table_rows": options.bigquery_rows, "endpoint": info.endpoint, "project": info.project},
        ))
    memory: list[Measure] = []
    if "memory" not in skip:
        small = {"table_rows": options.memory_rows}
        memory = [
            Measure("idle interpreter, same imports (baseline)", "idle", small),
            Measure(f"plex_etl one {options.memory_rows:,}-row partition, end to end local", "plex_local", small),
            Measure(f"plex_etl extraction, {options.memory_rows:,}-row table", "plex_extract", small),
        ]
    try:
        print(f"\n== side by side on the bench table ({options.rows:,} rows x 12 columns), {options.runs} runs")
        measure_rounds(measures + memory, options.runs)
    finally:
        if emulator is not None:
            bq_emulator.stop(emulator)

    scale_measures: list[Measure] = []
    if "scales" not in skip:
        scales = [float(s) for s in options.scales.split(",")]
        print(f"\n== demo Plex databases at scales {scales}, end to end into the local warehouse")
        for scale in scales:
            scale_measures.append(Measure(f"demo plex scale {scale:g}", "plex_demo", {"database": ensure_demo(scale)}))
        measure_rounds(scale_measures, options.runs)

    by = {m.method + (f":{m.args.get('table_rows')}" if "table_rows" in m.args else ""): m for m in measures}
    print(f"\n== results (medians of {options.runs} runs, each in a fresh process)\n")
    print_table(measures)
    extract, local = by[f"plex_extract:{options.rows}"], by[f"plex_local:{options.rows}"]
    cx = by[f"connectorx:{options.rows}"]
    print("\nratios (rows/s):")
    print(f"  plex_etl extraction / connectorx      = {extract.rate / cx.rate:.2f}x  (target >= 0.8x)")
    if f"dlt_pyarrow:{options.rows}" in by:
        dlt = by[f"dlt_pyarrow:{options.rows}"]
        pymysql = by[f"pymysql_sscursor:{options.rows}"]
        print(f"  plex_etl extraction / dlt pyarrow     = {extract.rate / dlt.rate:.1f}x  (target >= 10x)")
        print(f"  plex_etl extraction / PyMySQL loop    = {extract.rate / pymysql.rate:.1f}x")
    print(f"  plex_etl end to end local             = {fmt_rate(local.rate)} rows/s  (target >= 200k)")
    print(f"  plex_etl extraction peak RSS          = {extract.rss:.0f} MB  (target <= 300 MB)")

    if memory:
        print("\n== memory (issue 4)\n")
        print_table(memory)
        idle, partition, small_extract = memory
        print(f"\n  one {options.memory_rows:,}-row partition end to end: peak RSS {partition.rss:.0f} MB "
              f"(idle interpreter with the same imports {idle.rss:.0f} MB; target < 300 MB)")
        print(f"  extraction peak RSS: {small_extract.rss:.0f} MB at {options.memory_rows:,} rows, "
              f"{extract.rss:.0f} MB at {options.rows:,} rows (flat: bounded by one chunk)")

    if scale_measures:
        print("\n== time against rows across the demo scales\n")
        print("| scale | rows | seconds (median) | rows/s | s per M rows |")
        print("| --- | --- | --- | --- | --- |")
        for m in scale_measures:
            print(f"| {m.label.split()[-1]} | {m.rows:,} | {m.seconds:.1f} | {fmt_rate(m.rate)} | "
                  f"{m.seconds / m.rows * 1e6:.2f} |")
        xs = [m.rows for m in scale_measures]
        ys = [m.seconds for m in scale_measures]
        if len(xs) >= 2:
            fit = statistics.linear_regression(xs, ys)
            predicted = [fit.intercept + fit.slope * x for x in xs]
            worst = max(abs(p - y) / y for p, y in zip(predicted, ys, strict=True))
            from plex_etl.demo.schema import load_schema

            full = sum(t.rows for t in load_schema("plex").tables.values())
            projected = fit.intercept + fit.slope * full
            print(f"\n  linear fit: seconds = {fit.intercept:.2f} + {fit.slope * 1e6:.3f} x M rows "
                  f"(largest deviation of a scale from the line: {worst:.0%})")
            print(f"  full Plex at factor 1 ({full:,} rows): projected {projected / 60:.1f} minutes "
                  f"end to end, one table at a time (target < 10 minutes)")
    print(f"\nbenchmark took {(time.perf_counter() - started) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
