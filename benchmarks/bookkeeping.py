"""What a full refresh of long history costs in Dagster bookkeeping (issue 14, D).

    .venv/bin/python -m benchmarks.bookkeeping                                 # 2 rounds, SQLite
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --stock              # also Dagster's own storage
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --stock --postgres   # the production instance
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --ref DIR            # also `history` from another checkout

Builds the demo Plex database (scale 0.001, events over the last 730 days) once, then runs
`plex-etl replicate --full --source plex` into a fresh local warehouse and a fresh instance,
round by round, in these variants:
- `history`: the plan's `first_day` two years back: 731 daily partitions per dated table;
- `one day`: `first_day` = today: the same rows, every one in the first partition, so one
  partition per table: the rows' own cost, with the least bookkeeping;
- `history, Dagster's storage` (--stock): as `history` on Dagster's own storage (`storage:
  sqlite` or `storage: postgres`, before plex_etl/instance_storage.py; slow: ~10-15 minutes
  per run on SQLite on a loaded machine);
- `history (DIR)` (--ref DIR): as `history`, with plex_etl imported from another checkout.
The instance is the repository's dagster.yaml (SQLite in the run's DAGSTER_HOME), or with
--postgres deploy/dagster.yaml on a fresh database `<prefix>_<variant>` of the
PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), dropped afterwards. Variants run
interleaved within each round.
Bookkeeping share of `history` = (history - one day) / history, per round, median, of the
wall time and of the CPU time (user + system of the plex-etl process tree, which other work on
a shared machine inflates far less than the wall; MariaDB's and PostgreSQL's CPU not included).
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
# The MySQL demo database and the PostgreSQL instances are named `<prefix>_...`: two sessions on
# one machine pass different prefixes (PLEX_ETL_BENCH_DB_PREFIX), or one rebuilds the other's demo.
PREFIX = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bookkeeping")
DATABASE = f"{PREFIX}_plex"
STOCK_INSTANCE = "telemetry: {enabled: false}\nstorage:\n  sqlite:\n    base_dir: {env: DAGSTER_HOME}\n"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
# Dagster's own PostgreSQL storage, with the same settings as deploy/dagster.yaml.
STOCK_PG_INSTANCE = """telemetry: {enabled: false}
storage:
  postgres:
    postgres_db:
      hostname: {env: DAGSTER_PG_HOST}
      port: {env: DAGSTER_PG_PORT}
      db_name: {env: DAGSTER_PG_DB}
      username: {env: DAGSTER_PG_USERNAME}
      password: {env: DAGSTER_PG_PASSWORD}
      scheme: postgresql+psycopg2
"""


def plex_etl(*arguments: str, env: dict[str, str]) -> float:
    """Run plex-etl; the CPU seconds (user + system) of its process tree."""
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


def sqlite_events(home: Path) -> int:
    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        return db.execute("SELECT COUNT(*) FROM event_logs").fetchone()[0]


def postgres(sql: str, database: str = "postgres") -> int | None:
    """Runs one statement on the local PostgreSQL; the first column of its first row, if any."""
    import psycopg2

    connection = psycopg2.connect(dbname=database, connect_timeout=5, **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0] if cursor.description else None
    finally:
        connection.close()


def run(root: Path, label: str, first_day: dt.date, stock: bool, on_postgres: bool,
        code: Path = REPO) -> tuple[float, float, int]:
    home, warehouse = root / f"home-{label}", root / f"warehouse-{label}.duckdb"
    shutil.rmtree(home, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    home.mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(home), PLEX_ETL_CONFIG_DIR=str(config_dir(root, first_day)),
               PLEX_MYSQL_DATABASE=DATABASE, PLEX_ETL_WAREHOUSE="local", PLEX_ETL_LOCAL_WAREHOUSE=str(warehouse))
    if on_postgres:
        database = f"{PREFIX}_{label}".lower()
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        postgres(f'CREATE DATABASE "{database}"')
        env.update(DAGSTER_PG_HOST=PG["host"], DAGSTER_PG_PORT=str(PG["port"]), DAGSTER_PG_DB=database,
                   DAGSTER_PG_USERNAME=PG["user"], DAGSTER_PG_PASSWORD="")
        if stock:
            (home / "dagster.yaml").write_text(STOCK_PG_INSTANCE)
        else:
            shutil.copy(code / "deploy" / "dagster.yaml", home / "dagster.yaml")
    elif stock:
        (home / "dagster.yaml").write_text(STOCK_INSTANCE)
    else:
        shutil.copy(code / "dagster.yaml", home / "dagster.yaml")
    # As the production image does for PostgreSQL (Dagster's storage then batches
    # materializations); the local storage sets it itself, Dagster's SQLite storage ignores it.
    env["DAGSTER_EVENT_BATCH_SIZE"] = "500"
    if code != REPO:
        env["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    cpu = plex_etl("replicate", "--full", "--source", "plex", env=env)
    seconds = time.perf_counter() - started
    plex_etl("reconcile", "--source", "plex", env=env)  # exits 1 (check=True raises) if any table differs
    if on_postgres:
        count = postgres("SELECT COUNT(*) FROM event_logs", database) or 0
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    else:
        count = sqlite_events(home)
    print(f"{label}: {seconds:.1f} s, {cpu:.1f} s CPU, {count:,} events (load average {os.getloadavg()[0]:.1f})",
          file=sys.stderr, flush=True)
    return seconds, cpu, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stock", action="store_true", help="also time Dagster's own storage")
    parser.add_argument("--postgres", action="store_true",
                        help="the production instance (deploy/dagster.yaml) on the local PostgreSQL, not SQLite")
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
        variants["history, Dagster's storage"] = (two_years, True, REPO)
    results: dict[str, list[tuple[float, float, int]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="plexetl-bookkeeping-") as tmp:
        for round_ in range(args.rounds):
            for number, (label, (first_day, stock, code)) in enumerate(variants.items()):
                print(f"round {round_ + 1}: {label}:", end=" ", file=sys.stderr, flush=True)
                results[label].append(run(Path(tmp), f"variant{number}", first_day, stock, args.postgres, code))
    print(f"instance: {'deploy/dagster.yaml on PostgreSQL' if args.postgres else 'dagster.yaml (SQLite)'}; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
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
