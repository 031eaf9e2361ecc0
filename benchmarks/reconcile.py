"""What reconciling values costs: `plex-etl reconcile` of the whole demo Plex source (issue 24).

    .venv/bin/python -m benchmarks.reconcile --ref DIR                 # 3 rounds, scale 0.02
    .venv/bin/python -m benchmarks.reconcile --ref DIR --rounds 5 --scale 0.02

Builds the demo Plex database `<prefix>_plex` (PLEX_ETL_BENCH_DB_PREFIX, default plexetl_bench;
events over the last 60 days) at `--scale` when it is missing, replicates it once into a local
DuckDB warehouse in `--work` (plan's first_day 61 days back: every row, 61 partitions), then runs,
round by round and interleaved so that a shared machine's noise hits both alike:
- `values`: `plex-etl reconcile --source plex` of this checkout (counts, key hashes and value
  hashes of every column, per day);
- `keys (DIR)`: the same command with plex_etl from another checkout, e.g. one before value
  reconciliation (`git archive <commit> | tar -x -C DIR`): counts and key hashes only.
Each run must exit 0 (every table equal). Prints the wall and CPU seconds (the reconcile process;
MariaDB's CPU is another process) of each run, their medians and the median of the per-round ratio.

`--sides` also times each side alone, in this process, table by table, round by round: MySQL's one
statement per table with values hashed and with no day's values hashed (the rotating coverage's
cost for a day it skips: counts and key hashes only), and the warehouse's. Seconds per million rows
of each are what a larger database costs (docs/benchmarks.md, *Reconciliation*, extrapolates to the ERP's 113M rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bench")
DAYS = 60


def plex_etl(arguments: list[str], env: dict[str, str], code: Path = REPO) -> tuple[float, float, str]:
    """Run `python -m plex_etl.cli` with plex_etl from `code`: wall seconds, CPU seconds, stdout."""
    env = dict(env, PYTHONPATH=str(code))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "plex_etl.cli", *arguments], env=env, capture_output=True,
                          text=True, cwd=code)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"plex-etl {' '.join(arguments)} ({code}) exited {done.returncode}:\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), done.stdout


def prepare(work: Path, scale: float, reload: bool) -> dict[str, str]:
    """The demo database, a configuration whose plan starts 61 days back, and the warehouse."""
    database = f"{PREFIX}_plex"
    env = dict(os.environ, PLEX_MYSQL_DATABASE=database, DAGSTER_HOME=str(work / "home"),
               PLEX_ETL_CONFIG_DIR=str(work / "config"), PLEX_ETL_WAREHOUSE="local",
               PLEX_ETL_LOCAL_WAREHOUSE=str(work / "warehouse.duckdb"), DAGSTER_EVENT_BATCH_SIZE="500")
    built = work / f"built-{database}-{scale}"
    if not built.exists():
        print(f"building {database} at scale {scale} ...", file=sys.stderr, flush=True)
        plex_etl(["demo-db", "--source", "plex", "--scale", str(scale), "--days", str(DAYS), "--force"], env)
        shutil.rmtree(work / "home", ignore_errors=True)
        (work / "warehouse.duckdb").unlink(missing_ok=True)
        built.touch()
    if reload or not (work / "warehouse.duckdb").exists():
        shutil.rmtree(work / "config", ignore_errors=True)
        shutil.copytree(REPO / "plex_etl" / "config", work / "config")
        plan = work / "config" / "plex.plan.yaml"
        first_day = dt.date.today() - dt.timedelta(days=DAYS + 1)
        plan.write_text(re.sub(r"first_day: \d{4}-\d{2}-\d{2}", f"first_day: {first_day}", plan.read_text(), count=1))
        (work / "home").mkdir(exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", work / "home" / "dagster.yaml")
        (work / "warehouse.duckdb").unlink(missing_ok=True)
        print("replicating every row into the local warehouse ...", file=sys.stderr, flush=True)
        plex_etl(["replicate", "--full", "--source", "plex"], env)
    return env


def time_sides(env: dict[str, str], rounds: int) -> None:
    """MySQL's statement per table with and without values, and the warehouse's, in seconds."""
    os.environ.update(env)
    import sqlalchemy as sa

    from plex_etl.canonical import Coverage, Scope
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.defs.resources import warehouse_from_environment
    from plex_etl.extract.spec import replicated_table
    from plex_etl.extract.sql import digest_query, row_digest
    from plex_etl.mysql import connect
    from plex_etl.sources import get_source

    resource = warehouse_from_environment()
    warehouse = resource.get()
    catalog, plan = load_source_catalog("plex")
    specs = [replicated_table(catalog, plan, p.table, resource.dataset) for p in plan.included
             if p.strategy != "snapshot"]  # snapshots read one day, as their latest snapshot
    no_values = Coverage(cycle=1_000_000, phase=999_999)  # no day's number matches: no value hashed
    totals: dict[str, list[float]] = {"MySQL, values": [], "MySQL, no values": [], "warehouse, values": []}
    rows = 0
    with connect(get_source("plex")) as connection:
        for _ in range(rounds):
            spent = dict.fromkeys(totals, 0.0)
            rows = 0
            for spec in specs:
                for label, coverage in (("MySQL, values", None), ("MySQL, no values", no_values)):
                    sql = digest_query(spec, row_digest(spec, warehouse.kind, coverage), Scope())
                    started = time.perf_counter()
                    result = list(connection.execute(sa.text(sql)))
                    spent[label] += time.perf_counter() - started
                rows += sum(int(r[1]) for r in result)
                started = time.perf_counter()
                warehouse.digests(spec.target.dataset, spec.target.name, row_digest(spec, warehouse.kind), Scope())
                spent["warehouse, values"] += time.perf_counter() - started
            for label, seconds in spent.items():
                totals[label].append(seconds)
            print(f"sides: {', '.join(f'{k} {v:.1f} s' for k, v in spent.items())}", file=sys.stderr, flush=True)
    print(f"each side alone, {len(specs)} dated tables, {rows:,} rows, {rounds} rounds:")
    print("| side | median s | runs (s) | s per million rows |")
    print("| --- | --- | --- | --- |")
    for label, runs in totals.items():
        median = statistics.median(runs)
        print(f"| {label} | {median:.1f} | {', '.join(f'{r:.1f}' for r in runs)} | {median / rows * 1e6:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--ref", type=Path, help="a checkout whose `plex-etl reconcile` is the baseline")
    parser.add_argument("--work", type=Path, default=Path(f"/tmp/{PREFIX}_reconcile"),
                        help="where the warehouse, the configuration and the Dagster home live")
    parser.add_argument("--reload", action="store_true", help="replicate into a fresh warehouse first")
    parser.add_argument("--sides", action="store_true", help="also time MySQL's and the warehouse's side alone")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    env = prepare(args.work, args.scale, args.reload)
    variants = {"values": REPO}
    if args.ref:
        variants[f"keys ({args.ref})"] = args.ref.resolve()
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    rows = ""
    for round_ in range(1, args.rounds + 1):
        for label, code in variants.items():
            wall, cpu, out = plex_etl(["reconcile", "--source", "plex"], env, code)
            runs[label].append((wall, cpu))
            tables = out.count(": equal (")
            rows = rows or f"{sum(int(n.replace(',', '')) for n in re.findall(r'MySQL ([0-9,]+) rows', out)):,}"
            print(f"round {round_} {label}: {wall:.1f} s, {cpu:.1f} s CPU, {tables} tables equal "
                  f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    print(f"demo Plex at scale {args.scale}: {rows} rows; {args.rounds} rounds; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print("| variant | median s | runs (s) | median CPU s |")
    print("| --- | --- | --- | --- |")
    for label, results in runs.items():
        walls = [w for w, _ in results]
        print(f"| {label} | {statistics.median(walls):.1f} | {', '.join(f'{w:.1f}' for w in walls)} "
              f"| {statistics.median(c for _, c in results):.1f} |")
    if args.ref:
        base = runs[f"keys ({args.ref})"]
        ratios = [v[0] / k[0] for v, k in zip(runs["values"], base, strict=True)]
        print(f"values / keys, wall, median of rounds: {statistics.median(ratios):.2f}x "
              f"({', '.join(f'{r:.2f}' for r in ratios)})")
    if args.sides:
        time_sides(env, args.rounds)


if __name__ == "__main__":
    main()
