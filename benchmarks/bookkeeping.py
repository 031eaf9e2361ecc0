"""What a full refresh of long history costs in Dagster bookkeeping (issue 14, D).

    .venv/bin/python -m benchmarks.bookkeeping                                 # 2 rounds, SQLite
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --stock              # also Dagster's own storage
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --stock --postgres   # the production instance

Builds the demo Plex database (scale 0.001, events over the last 730 days) once, then runs
`plex-etl replicate --full --source plex` into a fresh local warehouse and a fresh instance,
round by round, in these variants:
- `history`: the plan's `first_day` two years back: 731 daily partitions per dated table;
- `one day`: `first_day` = today: the same rows, every one in the first partition, so one
  partition per table: the rows' own cost, with the least bookkeeping;
- `history, Dagster's storage` (--stock): as `history` on Dagster's own storage (`storage:
  sqlite` or `storage: postgres`, before plex_etl/instance_storage.py; slow: ~10-15 minutes
  per run on SQLite on a loaded machine).
The instance is the repository's dagster.yaml (SQLite in the run's DAGSTER_HOME), or with
--postgres deploy/dagster.yaml on a fresh database `<prefix>_<variant>` of the
PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), dropped afterwards. Variants run
interleaved within each round.
Bookkeeping share of `history` = (history - one day) / history, per round, median.
Both variants read and write the same rows and run the same checks; they differ only in the
number of partitions Dagster records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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


def plex_etl(*arguments: str, env: dict[str, str]) -> None:
    subprocess.run([str(Path(sys.executable).parent / "plex-etl"), *arguments], env=env, check=True,
                   stdout=subprocess.DEVNULL)


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


def run(root: Path, label: str, first_day: dt.date, stock: bool, on_postgres: bool) -> tuple[float, int]:
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
            shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    elif stock:
        (home / "dagster.yaml").write_text(STOCK_INSTANCE)
    else:
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # As the production image does for PostgreSQL (Dagster's storage then batches
    # materializations); the local storage sets it itself, Dagster's SQLite storage ignores it.
    env["DAGSTER_EVENT_BATCH_SIZE"] = "500"
    started = time.perf_counter()
    plex_etl("replicate", "--full", "--source", "plex", env=env)
    seconds = time.perf_counter() - started
    plex_etl("reconcile", "--source", "plex", env=env)  # exits 1 (check=True raises) if any table differs
    if on_postgres:
        count = postgres("SELECT COUNT(*) FROM event_logs", database) or 0
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    else:
        count = sqlite_events(home)
    print(f"{label}: {seconds:.1f} s, {count:,} events (load average {os.getloadavg()[0]:.1f})", file=sys.stderr,
          flush=True)
    return seconds, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stock", action="store_true", help="also time Dagster's own storage")
    parser.add_argument("--postgres", action="store_true",
                        help="the production instance (deploy/dagster.yaml) on the local PostgreSQL, not SQLite")
    args = parser.parse_args(argv)
    today = dt.date.today()
    env = dict(os.environ, PLEX_MYSQL_DATABASE=DATABASE)
    plex_etl("demo-db", "--scale", "0.001", "--source", "plex", "--days", "730", env=env)
    variants = {"history": (today - dt.timedelta(days=730), False), "one day": (today, False)}
    if args.stock:
        variants["history, Dagster's storage"] = (today - dt.timedelta(days=730), True)
    results: dict[str, list[tuple[float, int]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="plexetl-bookkeeping-") as tmp:
        for round_ in range(args.rounds):
            for label, (first_day, stock) in variants.items():
                print(f"round {round_ + 1}:", end=" ", file=sys.stderr, flush=True)
                results[label].append(run(Path(tmp), label.replace(" ", "_").replace(",", "").replace("'", ""),
                                          first_day, stock, args.postgres))
    print(f"instance: {'deploy/dagster.yaml on PostgreSQL' if args.postgres else 'dagster.yaml (SQLite)'}; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("| variant | partitions per dated table | median s | runs (s) | events in the instance |")
    print("| --- | --- | --- | --- | --- |")
    for label, runs in results.items():
        days = (today - variants[label][0]).days + 1
        seconds = [s for s, _ in runs]
        print(f"| {label} | {days} | {statistics.median(seconds):.1f} | {', '.join(f'{s:.1f}' for s in seconds)} "
              f"| {runs[-1][1]:,} |")
    shares = [(h - o) / h for (h, _), (o, _) in zip(results["history"], results["one day"], strict=True)]
    print(f"\nBookkeeping share of `history` (median of rounds): {statistics.median(shares):.0%}")


if __name__ == "__main__":
    main()
