"""Issue 26: peak RSS and rows/s of one load end to end into the local warehouse, by partition size.

    PLEX_ETL_BENCH_DATABASE=plexetl_memory_bench .venv/bin/python -m benchmarks.load_memory \\
        --rows 1000000 --rows 5000000 --mode replace --mode upsert --runs 3 [--ref /path/to/main]

One partition of the invoice-line bench table (`bench_table`, shape "lines": 29 columns like the
demo's `factlineas`, built once per size and reused) read by `PartitionStream` and loaded by
`LocalWarehouse.load` in a fresh process per run (`benchmarks.worker plex_local`): peak RSS is
that process's ru_maxrss, rows/s and client CPU are over the read and load (after imports; the
CPU of every thread of the process, not the server's: steadier than rows/s on a shared machine). Variants, interleaved
round by round: DuckDB's own defaults (80% of RAM, a thread per core: `LocalWarehouse`'s before
issue 26), 128MB and 1 thread (the Dagster resource's before), and the warehouse's defaults now;
`--ref`: the same defaults run from another checkout (e.g. main before this change; copy this
checkout's benchmarks/worker.py and bench_table.py over it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS: list[tuple[str, dict]] = [
    ("DuckDB defaults (80% of RAM, a thread per core)", {"duckdb_memory_limit": None, "duckdb_threads": None}),
    ("128MB, 1 thread (the Dagster resource before)", {"duckdb_memory_limit": "128MB", "duckdb_threads": 1}),
    ("the warehouse's defaults (auto, 1 thread)", {}),
    ("auto, 2 threads", {"duckdb_threads": 2}),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="partition sizes (default 1M and 5M)")
    parser.add_argument("--mode", action="append", choices=["replace", "upsert"], help="load modes (default replace)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ref", type=Path, action="append", default=[], help="another checkout, its defaults")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_table import ensure_bench_table
    from benchmarks.extract_compare import rate, run

    sizes = options.rows or [1_000_000, 5_000_000]
    modes = options.mode or ["replace"]
    for rows in sizes:
        ensure_bench_table(rows, shape="lines")
    variants = [(label, REPO, extra) for label, extra in VARIANTS]
    variants += [(f"{ref.name}'s defaults", ref, {}) for ref in options.ref]
    cases = [(rows, mode, label, repo, extra) for rows in sizes for mode in modes for label, repo, extra in variants]
    results: dict[tuple[int, str, str], list[dict]] = {(r, m, label): [] for r, m, label, _, _ in cases}
    for round_ in range(1, options.runs + 1):
        for rows, mode, label, repo, extra in cases:
            args = {"table_rows": rows, "shape": "lines", "mode": mode, **extra}
            result = run(repo, "plex_local", args)
            results[rows, mode, label].append(result)
            print(f"round {round_} {rows:,} rows {mode} {label}: {rate(result) / 1000:.0f}k rows/s, "
                  f"CPU {result['read_cpu_seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)

    print(f"\nmedians of {options.runs} interleaved rounds\n")
    print("| rows | mode | DuckDB settings | peak RSS MB (median) | rows/s (median) | client CPU s (median) "
          "| runs (MB) | runs (k rows/s) |")
    print("| ---: | --- | --- | ---: | ---: | ---: | --- | --- |")
    for (rows, mode, label), runs in results.items():
        print(f"| {rows:,} | {mode} | {label} | {statistics.median(r['peak_rss_mb'] for r in runs):.0f} | "
              f"{statistics.median(map(rate, runs)) / 1000:.0f}k | "
              f"{statistics.median(r['read_cpu_seconds'] for r in runs):.1f} | "
              f"{', '.join(str(round(r['peak_rss_mb'])) for r in runs)} | "
              f"{', '.join(f'{rate(r) / 1000:.0f}' for r in runs)} |")


if __name__ == "__main__":
    main()
