"""What a full refresh of long history costs on Dagster's stock storage (issue 23).

    .venv/bin/python -m benchmarks.bookkeeping                          # every scenario, SQLite and PostgreSQL
    .venv/bin/python -m benchmarks.bookkeeping --rounds 3 --scenario a  # one scenario

Scenarios (demo Plex databases, built once each):
- `a`: scale 0.001, events over the last two years;
- `b`: scale 0.001, events over the last 20 years (`plex-etl demo-db --years 20`);
- `c`: scale 0.02 (about 2.3M rows), the demo's 60 days.
Each runs `plex-etl replicate --full --source plex` into a fresh local warehouse and a fresh
instance, with Dagster's own storage: `storage: sqlite` (in the run's DAGSTER_HOME) and
`storage: postgres` (a fresh database `<prefix>_<variant>` on the PostgreSQL at 127.0.0.1:5432,
user postgres, trust auth, dropped afterwards), in two variants, interleaved within each round:
- `window`: the plan as `discover` writes it for that data: `first_day` the oldest date, the
  rolling window of daily partitions (`window_days` 31), the first partition loading the rest;
- `one partition`: `first_day` = today: the same rows, every one in one partition per table,
  the least bookkeeping Dagster can do for them.
Bookkeeping share of `window` = (window - one partition) / window, per round, median, of the wall
and of the CPU time (user + system of the plex-etl process tree; the database servers' CPU not
included). Each run ends with `plex-etl reconcile --source plex` (exit 1 fails the benchmark).
The projection of the full Plex (113M rows) fits wall = fixed + rows x cost on the `one partition`
runs of `a` and `c`, plus the window's bookkeeping measured on `c`.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The MySQL demo databases and the PostgreSQL instances are named `<prefix>_...`: two sessions on
# one machine pass different prefixes (PLEX_ETL_BENCH_DB_PREFIX).
PREFIX = os.environ.get("PLEX_ETL_BENCH_DB_PREFIX", "plexetl_bookkeeping")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SQLITE_INSTANCE = "telemetry: {enabled: false}\nstorage:\n  sqlite:\n    base_dir: {env: DAGSTER_HOME}\n"
POSTGRES_INSTANCE = """telemetry: {enabled: false}
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
PLEX_ROWS = 113_700_000


@dataclass(frozen=True)
class Scenario:
    name: str
    scale: float
    arguments: tuple[str, ...]  # how demo-db spreads the dates

    @property
    def database(self) -> str:
        return f"{PREFIX}_{self.name}_plex"


SCENARIOS = {
    "a": Scenario("a", 0.001, ("--days", "730")),
    "b": Scenario("b", 0.001, ("--years", "20")),
    "c": Scenario("c", 0.02, ()),
}


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float
    events: int
    rows: int


def plex_etl(*arguments: str, env: dict[str, str], capture: bool = False) -> tuple[float, str]:
    """Run plex-etl (exit status checked); the CPU seconds (user + system) of its process tree, its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([str(Path(sys.executable).parent / "plex-etl"), *arguments], env=env, check=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), done.stdout or ""


def oldest_date(database: str) -> dt.date:
    """The oldest partition date of the demo's dated tables (what `discover` proposes as first_day)."""
    import sqlalchemy as sa

    from plex_etl.mysql import create_engine
    from plex_etl.sources import get_source, with_database

    engine = create_engine(with_database(get_source("plex"), database))
    with engine.connect() as connection:
        day = connection.execute(sa.text("SELECT MIN(Emision) FROM factcabecera")).scalar()
    engine.dispose()
    return day.date() if isinstance(day, dt.datetime) else day


def config_dir(root: Path, first_day: dt.date) -> Path:
    """The repository's configuration with the Plex plan's first_day replaced."""
    target = root / f"config-{first_day}"
    if not target.exists():
        shutil.copytree(REPO / "plex_etl" / "config", target)
        plan = target / "plex.plan.yaml"
        text = plan.read_text()
        line = next(line for line in text.splitlines() if line.strip().startswith("first_day:"))
        plan.write_text(text.replace(line, line.split("first_day:")[0] + f"first_day: {first_day}", 1))
    return target


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


def rows_loaded(warehouse: Path) -> int:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_type = 'BASE TABLE'").fetchall()
        return sum(con.execute(f'SELECT COUNT(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in tables)


def run(root: Path, scenario: Scenario, label: str, first_day: dt.date, on_postgres: bool) -> Run:
    home, warehouse = root / f"home-{label}", root / f"warehouse-{label}.duckdb"
    shutil.rmtree(home, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    home.mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(home), PLEX_ETL_CONFIG_DIR=str(config_dir(root, first_day)),
               PLEX_MYSQL_DATABASE=scenario.database, PLEX_ETL_WAREHOUSE="local",
               PLEX_ETL_LOCAL_WAREHOUSE=str(warehouse))
    database = f"{PREFIX}_{label}".lower()
    if on_postgres:
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        postgres(f'CREATE DATABASE "{database}"')
        env.update(DAGSTER_PG_HOST=PG["host"], DAGSTER_PG_PORT=str(PG["port"]), DAGSTER_PG_DB=database,
                   DAGSTER_PG_USERNAME=PG["user"], DAGSTER_PG_PASSWORD="", DAGSTER_EVENT_BATCH_SIZE="500")
        (home / "dagster.yaml").write_text(POSTGRES_INSTANCE)
    else:
        (home / "dagster.yaml").write_text(SQLITE_INSTANCE)
    started = time.perf_counter()
    cpu, _ = plex_etl("replicate", "--full", "--source", "plex", env=env)
    seconds = time.perf_counter() - started
    plex_etl("reconcile", "--source", "plex", env=env)  # exits 1 (check=True raises) if any table differs
    if on_postgres:
        events = postgres("SELECT COUNT(*) FROM event_logs", database) or 0
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    else:
        with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
            events = db.execute("SELECT COUNT(*) FROM event_logs").fetchone()[0]
    rows = rows_loaded(warehouse)
    print(f"  {scenario.name} {label}: {seconds:.1f} s, {cpu:.1f} s CPU, {events:,} events, {rows:,} rows "
          f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return Run(seconds, cpu, events, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--storage", action="append", choices=["sqlite", "postgres"], help="default: both")
    args = parser.parse_args(argv)
    scenarios = [SCENARIOS[s] for s in (args.scenario or sorted(SCENARIOS))]
    storages = args.storage or ["sqlite", "postgres"]
    today = dt.date.today()
    for scenario in scenarios:
        env = dict(os.environ, PLEX_MYSQL_DATABASE=scenario.database)
        plex_etl("demo-db", "--scale", str(scenario.scale), "--source", "plex", *scenario.arguments, env=env)
    variants = [(s, storage, kind) for s in scenarios for storage in storages for kind in ("window", "one")]
    results: dict[tuple[str, str, str], list[Run]] = {(s.name, st, k): [] for s, st, k in variants}
    with tempfile.TemporaryDirectory(prefix="plexetl-bookkeeping-") as tmp:
        firsts = {s.name: oldest_date(s.database) for s in scenarios}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}", file=sys.stderr, flush=True)
            for number, (scenario, storage, kind) in enumerate(variants):
                first_day = firsts[scenario.name] if kind == "window" else today
                results[(scenario.name, storage, kind)].append(
                    run(Path(tmp), scenario, f"v{number}", first_day, storage == "postgres"))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; medians of {args.rounds} interleaved rounds")
    print("| scenario | storage | variant | wall s | CPU s | rows | rows/s | events | bookkeeping (wall / CPU) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        for storage in storages:
            window, one = results[(scenario.name, storage, "window")], results[(scenario.name, storage, "one")]
            wall = [(w.seconds - o.seconds) / w.seconds for w, o in zip(window, one, strict=True)]
            cpu = [(w.cpu - o.cpu) / w.cpu for w, o in zip(window, one, strict=True)]
            for kind, runs in (("window", window), ("one partition", one)):
                seconds = statistics.median(r.seconds for r in runs)
                share = f"{statistics.median(wall):.0%} / {statistics.median(cpu):.0%}" if kind == "window" else ""
                print(f"| {scenario.name} | {storage} | {kind} | {seconds:.1f} | "
                      f"{statistics.median(r.cpu for r in runs):.1f} | {runs[-1].rows:,} | "
                      f"{runs[-1].rows / seconds:,.0f} | {runs[-1].events:,} | {share} |")
    if {"a", "c"} <= {s.name for s in scenarios}:
        for storage in storages:
            small, large = (results[(n, storage, "one")] for n in ("a", "c"))
            t_small, t_large = statistics.median(r.seconds for r in small), statistics.median(r.seconds for r in large)
            per_row = (t_large - t_small) / (large[-1].rows - small[-1].rows)
            fixed = t_small - per_row * small[-1].rows
            window = results[("c", storage, "window")]
            extra = statistics.median(w.seconds - o.seconds for w, o in zip(window, large, strict=True))
            projected = fixed + per_row * PLEX_ROWS + extra
            print(f"Projected full Plex ({PLEX_ROWS:,} rows) into the local warehouse, {storage}: "
                  f"{projected / 60:.1f} min (fixed {fixed:.0f} s + {1 / per_row:,.0f} rows/s + window {extra:.0f} s)")


if __name__ == "__main__":
    main()
