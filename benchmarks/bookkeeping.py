"""What a full refresh of long history costs in Dagster bookkeeping (issue 14, D).

    .venv/bin/python -m benchmarks.bookkeeping                      # 2 rounds
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --stock   # also Dagster's own SQLite storage
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --ref DIR # also `history` from another checkout

Builds the demo Plex database (scale 0.001, events over the last 730 days) once, then runs
`plex-etl replicate --full --source plex` into a fresh local warehouse and a fresh SQLite
instance, round by round, in these variants:
- `history`: the plan's `first_day` two years back: 731 daily partitions per dated table;
- `one day`: `first_day` = today: the same rows, every one in the first partition, so one
  partition per table: the rows' own cost, with the least bookkeeping;
- `history, Dagster's SQLite storage` (--stock): as `history` on `storage: sqlite`
  (before plex_etl/instance_storage.py; slow: ~15 minutes per run on a loaded machine);
- `history (DIR)` (--ref DIR): as `history`, with plex_etl imported from another checkout.
Bookkeeping share of `history` = (history - one day) / history, per round, median.
Both variants read and write the same rows and run the same checks; they differ only in the
number of partitions Dagster records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The demo database; PLEX_ETL_BENCH_DATABASE gives a session its own (concurrent benchmarks).
DATABASE = os.environ.get("PLEX_ETL_BENCH_DATABASE", "plexetl_bookkeeping_plex")
STOCK_INSTANCE = "telemetry: {enabled: false}\nstorage:\n  sqlite:\n    base_dir: {env: DAGSTER_HOME}\n"


def plex_etl(*arguments: str, env: dict[str, str]) -> float:
    """Run plex-etl; the CPU seconds (user + system) of its process tree, which other work on a
    shared machine inflates far less than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(Path(sys.executable).parent / "plex-etl"), *arguments], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def config_dir(root: Path, first_day: dt.date) -> Path:
    """The repository's configuration with the Plex plan's first_day replaced."""
    target = root / f"config-{first_day}"
    if not target.exists():
        shutil.copytree(REPO / "plex_etl" / "config", target)
        plan = target / "plex.plan.yaml"
        text = plan.read_text()
        lines = [line for line in text.splitlines() if line.strip().startswith("first_day:")]
        plan.write_text(text.replace(lines[0], lines[0].split("first_day:")[0] + f"first_day: {first_day}", 1))
    return target


def events(home: Path) -> int:
    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        return db.execute("SELECT COUNT(*) FROM event_logs").fetchone()[0]


def run(root: Path, label: str, first_day: dt.date, stock: bool, code: Path = REPO) -> tuple[float, float, int]:
    home, warehouse = root / f"home-{label}", root / f"warehouse-{label}.duckdb"
    shutil.rmtree(home, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    home.mkdir()
    if stock:
        (home / "dagster.yaml").write_text(STOCK_INSTANCE)
    else:
        shutil.copy(code / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), PLEX_ETL_CONFIG_DIR=str(config_dir(root, first_day)),
               PLEX_MYSQL_DATABASE=DATABASE, PLEX_ETL_WAREHOUSE="local", PLEX_ETL_LOCAL_WAREHOUSE=str(warehouse))
    env.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    if code != REPO:
        env["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    cpu = plex_etl("replicate", "--full", "--source", "plex", env=env)
    seconds = time.perf_counter() - started
    plex_etl("reconcile", "--source", "plex", env=env)  # exits 1 (check=True raises) if any table differs
    return seconds, cpu, events(home)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stock", action="store_true", help="also time Dagster's own SQLite storage")
    parser.add_argument("--ref", type=Path, help="also time `history` with plex_etl from this checkout")
    args = parser.parse_args(argv)
    today = dt.date.today()
    env = dict(os.environ, PLEX_MYSQL_DATABASE=DATABASE)
    plex_etl("demo-db", "--scale", "0.001", "--source", "plex", "--days", "730", env=env)
    two_years = today - dt.timedelta(days=730)
    variants = {"history": (two_years, False, REPO), "one day": (today, False, REPO)}
    if args.ref:
        variants[f"history ({args.ref})"] = (two_years, False, args.ref.resolve())
    if args.stock:
        variants["history, Dagster's SQLite storage"] = (two_years, True, REPO)
    results: dict[str, list[tuple[float, float, int]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="plexetl-bookkeeping-") as tmp:
        for round_ in range(args.rounds):
            for number, (label, (first_day, stock, code)) in enumerate(variants.items()):
                if stock and round_:
                    continue  # one run of the slow variant is enough to show the order of magnitude
                results[label].append(run(Path(tmp), f"variant{number}", first_day, stock, code))
                wall, cpu, _ = results[label][-1]
                print(f"round {round_ + 1}: {label}: {wall:.1f} s, {cpu:.1f} s CPU, load average "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    print("| variant | partitions per dated table | median s | runs (s) | median CPU s | runs (CPU s) | events |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in results.items():
        days = (today - variants[label][0]).days + 1
        walls, cpus = [w for w, _, _ in runs], [c for _, c, _ in runs]
        print(f"| {label} | {days} | {statistics.median(walls):.1f} | {', '.join(f'{s:.1f}' for s in walls)} "
              f"| {statistics.median(cpus):.1f} | {', '.join(f'{s:.1f}' for s in cpus)} | {runs[-1][2]:,} |")
    for label in (label for label in results if label.startswith("history") and not variants[label][1]):
        for index, kind in ((0, "wall"), (1, "CPU")):
            shares = [(h[index] - o[index]) / h[index] for h, o in zip(results[label], results["one day"], strict=True)]
            print(f"Bookkeeping share of `{label}`, {kind} (median of rounds): {statistics.median(shares):.0%}")

if __name__ == "__main__":
    main()
