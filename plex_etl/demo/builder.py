"""Build the demo databases `plex` and `quantio`: the production schema, synthetic data.

`build_demo(source, scale)` drops and recreates `source.database` with the tables of the
demo schema named by `source.name` (`plex_schema.yaml`, `quantio_schema.yaml`), every
foreign key declared, and rows generated deterministically (same seed and end date, same
tables byte for byte). Row counts are production x scale (see `expected_rows`).

The data looks like an Argentine pharmacy chain and carries the mess a 20-year-old ERP
accumulates, where the column allows it:
- NULLs in nullable columns (each column its own share), and nullable foreign keys
  sometimes NULL;
- zero dates `0000-00-00` / `0000-00-00 00:00:00` in non-event DATE/DATETIME columns
  (never in the event dates partitions are built on);
- TIME values beyond 24 hours ('100:30:00') and negative ones ('-01:15:00');
- accented text (Núñez, Peña, Córdoba, Tucumán) stored in latin1 tables, converted by
  the server from the UTF-8 load files;
- maximum integer values (2147483647 in int(11), 127 in tinyint(4), 2^64-1 in BIGINT
  UNSIGNED) in non-key columns;
- text with tabs, newlines and backslashes, and binary columns with arbitrary bytes.

Rows are generated column-wise in chunks and loaded with LOAD DATA LOCAL INFILE, with
foreign-key and unique checks off; generation of the next chunk overlaps the load of the
previous one.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

from plex_etl.demo.generate import TableGenerator, load_columns
from plex_etl.demo.keys import Keys
from plex_etl.demo.rules import AFTER_LOAD, SOFT_REFERENCES
from plex_etl.demo.schema import Schema, Table, expected_rows, load_schema, quote
from plex_etl.demo.values import Period
from plex_etl.mysql import create_engine
from plex_etl.sources import Source, with_database

DEMO_SOURCES: tuple[str, ...] = ("plex", "quantio")
MARKER_TABLE = "_plex_etl_demo"

__all__ = ["DEMO_SOURCES", "MARKER_TABLE", "NotADemoDatabaseError", "build_demo",
           "expected_rows"]

# Zero dates and out-of-range values must load as they are, as in the production server.
LOAD_SQL_MODE = "NO_ENGINE_SUBSTITUTION"


class NotADemoDatabaseError(RuntimeError):
    """The database exists and was not built by `build_demo`: dropping it needs force."""


def build_demo(
    source: Source,
    scale: float,
    days: int = 60,
    seed: int = 42,
    force: bool = False,
    end_date: dt.date | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """(Re)build the demo database `source.database` for the schema named `source.name`.

    Returns the rows of every demo table (the marker table `_plex_etl_demo` aside).
    Refuses to drop an existing database without the marker table unless `force`.
    """
    if source.name not in DEMO_SOURCES:
        raise ValueError(
            f"no demo schema for source '{source.name}': expected one of {', '.join(DEMO_SOURCES)}"
        )
    if scale <= 0 or days < 1:
        raise ValueError(f"scale must be > 0 and days >= 1 (got scale={scale}, days={days})")
    # Today where the source is: its latest daily partition, not the machine's date.
    end_date = end_date or dt.datetime.now(ZoneInfo(source.time_zone)).date()
    schema = load_schema(source.name)
    keys = Keys(schema, scale, seed, schema.foreign_keys + SOFT_REFERENCES[source.name])
    period = Period(end_date, days)
    started = time.perf_counter()

    engine = create_engine(with_database(source, ""), local_infile=True)  # LOAD DATA LOCAL INFILE
    connections = [engine.raw_connection() for _ in ("loader", "indexer")]
    try:
        cursor = connections[0].cursor()
        _recreate_database(cursor, source.database, force)
        for connection in connections:
            connection.cursor().execute(f"USE `{source.database}`")
            connection.cursor().execute(
                f"SET SESSION sql_mode = '{LOAD_SQL_MODE}', foreign_key_checks = 0, "
                "unique_checks = 0"
            )
        _write_marker(cursor, source.name, seed, scale, days, end_date)
        for table in schema.tables.values():
            cursor.execute(table.ddl())
        loaded = _load_tables(*connections, keys, period, _load_order(schema))
        counts = {name: loaded[name] for name in schema.tables}
        for statement in AFTER_LOAD[source.name]:
            cursor.execute(statement)
        connections[0].commit()
    finally:
        for connection in connections:
            connection.close()
        engine.dispose()
    log(_summary(source, counts, time.perf_counter() - started,
                 f"scale {scale:g}, seed {seed}, {days} days to {end_date}"))
    return counts


def _recreate_database(cursor: Any, database: str, force: bool) -> None:
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,)
    )
    if cursor.fetchone()[0]:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (database, MARKER_TABLE),
        )
        if not cursor.fetchone()[0] and not force:
            raise NotADemoDatabaseError(
                f"database '{database}' exists and was not built by plex-etl demo-db "
                f"(no {MARKER_TABLE} table); refusing to drop it. "
                "Pass --force (force=True) to drop and rebuild it anyway."
            )
        cursor.execute(f"DROP DATABASE `{database}`")
    cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")


def _write_marker(cursor: Any, schema: str, seed: int, scale: float, days: int,
                  end_date: dt.date) -> None:
    # Written first, so a build that fails halfway can be rebuilt without --force.
    cursor.execute(
        f"CREATE TABLE `{MARKER_TABLE}` (schema_name VARCHAR(20) NOT NULL, seed BIGINT NOT NULL, "
        "scale DOUBLE NOT NULL, days INT NOT NULL, end_date DATE NOT NULL, "
        "built_at DATETIME NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    cursor.execute(
        f"INSERT INTO `{MARKER_TABLE}` VALUES (%s, %s, %s, %s, %s, UTC_TIMESTAMP())",
        (schema, seed, scale, days, end_date),
    )


def _load_order(schema: Schema) -> list[Table]:
    """Parents before children (a self-reference aside), so keys can be added early."""
    ordered: dict[str, Table] = {}
    visiting: set[str] = set()

    def visit(table: Table) -> None:
        if table.name in ordered or table.name in visiting:
            return
        visiting.add(table.name)
        for fk in table.foreign_keys:
            visit(schema.tables[fk.referenced_table])
        ordered[table.name] = table

    for table in schema.tables.values():
        visit(table)
    return list(ordered.values())


def _load_tables(loader: Any, indexer: Any, keys: Keys, period: Period,
                 tables: list[Table]) -> dict[str, int]:
    """Generate chunks here while `loader` loads earlier ones and `indexer` adds the keys.

    Each table is loaded in one transaction, with its primary key only; once it and the
    tables it references are committed, the indexer connection builds its secondary
    indexes and foreign keys, in parallel with the next loads (the server has two cores).
    """
    counts: dict[str, int] = {}
    committed: dict[str, Future[None]] = {}
    in_flight: collections.deque[Future[None]] = collections.deque()
    keyed: list[Future[None]] = []
    cursor = loader.cursor()
    with ThreadPoolExecutor(max_workers=1) as loading, \
            ThreadPoolExecutor(max_workers=1) as indexing, \
            tempfile.TemporaryDirectory(prefix="plex-etl-demo-") as folder:
        try:
            for table in tables:
                for number, chunk in enumerate(TableGenerator(keys, table, period).chunks()):
                    # Bounded memory and disk: at most two chunks wait.
                    while len(in_flight) >= 2:
                        in_flight.popleft().result()
                    path = os.path.join(folder, f"{table.name}.{number}.tsv")
                    with open(path, "wb") as file:
                        file.write(chunk.text)
                    in_flight.append(
                        loading.submit(_load_file, cursor, table, chunk.stop - chunk.start, path))
                committed[table.name] = loading.submit(loader.commit)
                waits = [committed[table.name]] + [
                    committed[fk.referenced_table] for fk in table.foreign_keys
                    if fk.referenced_table in committed
                ]
                keyed.append(indexing.submit(_add_keys, indexer, table, waits))
                counts[table.name] = keys.counts[table.name]
            for future in [*in_flight, *committed.values(), *keyed]:
                future.result()
        finally:
            for future in [*in_flight, *committed.values(), *keyed]:
                future.cancel()
    return counts


def _add_keys(connection: Any, table: Table, waits: list[Future[None]]) -> None:
    for future in waits:
        future.result()
    statement = table.keys_ddl()
    if statement:
        connection.cursor().execute(statement)


def _load_file(cursor: Any, table: Table, rows: int, path: str) -> None:
    targets = load_columns(table)
    sets = [expression for _, expression in targets if expression]
    cursor.execute(
        f"LOAD DATA LOCAL INFILE {quote(path)} INTO TABLE `{table.name}` CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
        f"({', '.join(target for target, _ in targets)})"
        + (f" SET {', '.join(sets)}" if sets else "")
    )
    if cursor.rowcount != rows:
        raise RuntimeError(f"{table.name}: loaded {cursor.rowcount} rows of {rows}")
    os.remove(path)


def _summary(source: Source, counts: dict[str, int], seconds: float, options: str) -> str:
    width = max(len(name) for name in counts)
    total = sum(counts.values())
    lines = [f"demo database {source.database} ({source.name} schema, {options}):",
             f"  {'table'.ljust(width)}  {'rows':>12}"]
    lines += [f"  {name.ljust(width)}  {rows:>12,}" for name, rows in counts.items()]
    lines.append(f"  {'total'.ljust(width)}  {total:>12,}")
    rate = total / seconds if seconds > 0 else 0.0
    lines.append(f"  {total:,} rows in {len(counts)} tables, {seconds:.1f} s, {rate:,.0f} rows/s")
    return "\n".join(lines)
