"""Issue 14: interleaved extraction runs of this checkout, other ones, and connectorx.

    PLEX_ETL_BENCH_DATABASE=plexetl_ext_bench .venv/bin/python -m benchmarks.extract_compare \\
        --ref /path/to/a/checkout/of/the/previous/main --runs 5

Each run is a fresh process (`benchmarks.worker`, run from the checkout it measures), round by
round: `plex_extract` and `plex_local` of each reference checkout (`--ref`, repeatable; the
first is "before", the others go by their folder's name) and of this one, then connectorx
`read_sql(return_type="arrow")`, on the same bench table; with `--text`, also this checkout's
extraction through the text read (PLEX_ETL_READER=text, the fallback of extract/text.py).
Prints one table of medians (rows/s over `read_seconds`: the read alone, after imports and
set-up; the client process's CPU over the same span) and, per method, the median of its
per-round ratios to connectorx (unless `--skip-connectorx`) and, end to end, to the same
checkout's extraction alone. A reference checkout's benchmarks/ needs the worker's
`read_seconds` and `read_cpu_seconds` and the bench table's catalog file (copy this
checkout's benchmarks/worker.py and bench_table.py over it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(repo: Path, method: str, args: dict, reader: str = "") -> dict:
    # The checkout first; what PYTHONPATH held (e.g. a --target dir with connectorx) after it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    if reader:
        env["PLEX_ETL_READER"] = reader
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", method, json.dumps(args)], cwd=repo,
                          env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{repo} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def rate(result: dict) -> float:
    return result["rows"] / result["read_seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", type=Path, action="append", default=[],
                        help="a checkout to compare with (e.g. the previous main); repeatable")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-local", action="store_true", help="extraction only")
    parser.add_argument("--skip-connectorx", action="store_true", help="no connectorx runs (not installed)")
    parser.add_argument("--text", action="store_true", help="also this checkout's extraction through the text read")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_table import ensure_bench_table

    ensure_bench_table(options.rows)
    args = {"table_rows": options.rows}
    methods = ["plex_extract"] + ([] if options.skip_local else ["plex_local"])
    checkouts = [("before" if i == 0 else ref.name, ref) for i, ref in enumerate(options.ref)]
    specs = [(label, repo, m, "") for label, repo in [*checkouts, ("after", REPO)] for m in methods]
    if options.text:
        specs.append(("after, text read", REPO, "plex_extract", "text"))
    if not options.skip_connectorx:
        specs.append(("", REPO, "connectorx", ""))
    results: dict[tuple[str, str], list[dict]] = {(label, m): [] for label, _, m, _ in specs}
    for round_ in range(1, options.runs + 1):
        for label, repo, method, reader in specs:
            result = run(repo, method, args, reader)
            results[label, method].append(result)
            print(f"round {round_} {method} ({label}): {rate(result) / 1000:.0f}k rows/s, "
                  f"CPU {result['read_cpu_seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)

    def ratio(runs: list[dict], base: list[dict] | None) -> str:
        """Median of the per-round ratios of rows/s."""
        if not base:
            return ""
        return f"{statistics.median(rate(a) / rate(b) for a, b in zip(runs, base, strict=True)):.2f}x"

    print(f"\n{options.rows:,} rows, medians of {options.runs} interleaved rounds\n")
    print("| method | rows/s (median) | client CPU s (median) | peak RSS MB (median) | x connectorx "
          "| x own extraction | runs (k rows/s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for (label, method), runs in results.items():
        own = results[label, "plex_extract"] if method == "plex_local" else None
        print(f"| {method} ({label}) | {statistics.median(map(rate, runs)) / 1000:.0f}k | "
              f"{statistics.median(r['read_cpu_seconds'] for r in runs):.2f} | "
              f"{statistics.median(r['peak_rss_mb'] for r in runs):.0f} | "
              f"{ratio(runs, results.get(('', 'connectorx')))} | {ratio(runs, own)} | "
              f"{', '.join(f'{rate(r) / 1000:.0f}' for r in runs)} |")

if __name__ == "__main__":
    main()
