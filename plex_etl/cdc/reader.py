"""Reading MySQL's row-based binary log from a position: which keys changed, up to where."""

from __future__ import annotations

import os
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pymysql

from plex_etl.sources import Source, resolve_credentials


class CaptureError(RuntimeError):
    """Change capture cannot go on (for a table or a source); the message says how to recover."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in the binary log: file name and byte offset (`binlog.000012:4711`)."""

    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    @classmethod
    def parse(cls, text: str) -> Position:
        file, _, pos = text.rpartition(":")
        if not file or not pos.isdigit():
            raise CaptureError(f"invalid binary-log position {text!r} (expected file:offset)")
        return cls(file, int(pos))


STOPPED = "stopped "  # prefix of a stored position whose table stopped: "stopped <position> <message>"


@dataclass(frozen=True)
class TableState:
    """What the warehouse stores for one captured table."""

    position: Position
    stopped: str | None = None  # why capture of the table stopped, and how to recover

    def text(self) -> str:
        return f"{STOPPED}{self.position} {self.stopped}" if self.stopped else str(self.position)

    @classmethod
    def parse(cls, text: str) -> TableState:
        if text.startswith(STOPPED):
            position, _, message = text[len(STOPPED):].partition(" ")
            return cls(Position.parse(position), message)
        return cls(Position.parse(text))


@dataclass(frozen=True)
class Watch:
    """The tables one read looks at: captured tables by name, and for each watched ancestor the
    (captured table, hop index, referenced columns) whose rows depend on it."""

    schema: str
    captured: dict[str, tuple[str, ...]]  # table -> primary key columns
    ancestors: dict[str, list[tuple[str, int, tuple[str, ...]]]] = field(default_factory=dict)

    @property
    def tables(self) -> set[str]:
        return set(self.captured) | set(self.ancestors)


@dataclass
class ChangeBatch:
    """What the binary log says changed between `start` and `end` (a commit boundary)."""

    start: Position
    end: Position
    keys: dict[str, set[tuple]] = field(default_factory=dict)  # captured table -> keys changed
    # (captured table, hop index) -> values of the ancestor's referenced columns that changed
    ancestor_values: dict[tuple[str, int], set[tuple]] = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=dict)  # table -> insert/update/delete rows
    events: int = 0
    last_event_time: float | None = None  # commit time (server clock) of the last change read
    caught_up: bool = False  # the read reached the end of the log
    schema_changes: dict[str, str] = field(default_factory=dict)  # table -> message (capture stops)


_DDL = re.compile(r"^\s*(ALTER|DROP|RENAME|TRUNCATE|CREATE)\b", re.IGNORECASE)
# Server errors: purged/unknown position; missing privileges (REPLICATION SLAVE / CLIENT).
_PURGED = {1236}
_PRIVILEGE = {1227, 1044, 1045, 1142, 1370}


def connection_settings(source: Source) -> dict[str, Any]:
    credentials = resolve_credentials(source)
    return {
        "host": credentials.host, "port": credentials.port, "user": credentials.user,
        "password": str(credentials.password), "connect_timeout": source.connect_timeout,
        "read_timeout": source.read_timeout,
    }


def replica_server_id(source: Source) -> int:
    """A server id for the replication connection: unique per source and process (two
    connections with one id make the server drop the older)."""
    if env := os.environ.get("PLEX_ETL_CDC_SERVER_ID"):
        return int(env)
    return 100_000 + zlib.crc32(f"{source.name} {os.getpid()}".encode()) % 1_000_000_000


def describe_error(source: Source, exc: BaseException, start: Position) -> str:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if code in _PURGED:
        return (
            f"{source.describe()}: binary-log position {start} is no longer available ({text}). "
            "The log was purged (expire_logs_days / binlog_expire_logs_seconds) or the position is "
            "invalid. Recovery: resync the source's captured tables (Dagster: launch the "
            f"`{source.name}_cdc` job with config resync: all; Python: plex_etl.cdc.apply.resync), "
            "and keep the log longer than the longest pause of change capture."
        )
    if code in _PRIVILEGE:
        return (
            f"{source.describe()}: missing privilege for change capture ({text}). The capture user "
            "needs: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '<user>'@'<host>' "
            "(MariaDB 10.5+: REPLICATION SLAVE, BINLOG MONITOR), plus SELECT on the captured tables."
        )
    return f"{source.describe()}: reading the binary log from {start} failed: {exc}"


def server_status(source: Source) -> dict[str, str]:
    """log_bin, binlog_format, binlog_row_image of the source: capture needs ON, ROW, FULL."""
    connection = pymysql.connect(**connection_settings(source))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                           "('log_bin', 'binlog_format', 'binlog_row_image')")
            return {k: str(v) for k, v in cursor.fetchall()}
    finally:
        connection.close()


def check_server(source: Source) -> None:
    """Raise CaptureError naming what the server lacks for change capture."""
    status = server_status(source)
    wrong = [f"{k}={status.get(k)} (needs {want})" for k, want in
             (("log_bin", "ON"), ("binlog_format", "ROW"), ("binlog_row_image", "FULL"))
             if (status.get(k) or "").upper() != want]
    if wrong:
        raise CaptureError(
            f"{source.describe()}: the binary log is not usable for change capture: {', '.join(wrong)}. "
            "Set log_bin, binlog_format=ROW and binlog_row_image=FULL in the server's configuration."
        )


def read_changes(
    source: Source,
    watch: Watch,
    start: Position,
    after: dict[str, Position],
    *,
    max_events: int = 20_000,
    max_seconds: float = 10.0,
) -> ChangeBatch:
    """Read from `start` up to the end of the log, or to the first commit after `max_events`
    row changes or `max_seconds`. A row change at or before `after[table]` (that table's own
    position) is skipped for it. A DDL statement on a watched table ends the batch before it
    and is reported in `schema_changes` for the captured tables it concerns."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import QueryEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    batch = ChangeBatch(start=start, end=start)
    settings = connection_settings(source)
    stream = BinLogStreamReader(
        connection_settings=settings,
        server_id=replica_server_id(source),
        resume_stream=True, log_file=start.file, log_pos=start.pos, blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent],
        only_tables=sorted(watch.tables),
    )
    deadline = time.monotonic() + max_seconds
    try:
        while True:
            event = stream.fetchone()
            if event is None:
                batch.caught_up = True
                if batch.end < Position(stream.log_file or start.file, stream.log_pos or start.pos):
                    batch.end = Position(stream.log_file, stream.log_pos)
                break
            here = Position(stream.log_file, stream.log_pos)
            if isinstance(event, XidEvent):
                batch.end = here
                if batch.events >= max_events or time.monotonic() > deadline:
                    break
                continue
            if isinstance(event, QueryEvent):
                query = event.query if isinstance(event.query, str) else event.query.decode(errors="replace")
                if not _DDL.match(query):
                    continue  # BEGIN, COMMIT of non-transactional tables...
                schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema)
                # A table whose own position is past the statement (copied after it) is not concerned.
                touched = [t for t in _ddl_tables(query, schema, watch) if here > after.get(t, Position("", 0))]
                if touched:
                    for table in touched:
                        batch.schema_changes[table] = (
                            f"schema change of {source.name}.{table} in the binary log at {batch.end}: "
                            f"`{' '.join(query.split())[:300]}`. Change capture of the table stopped before it. "
                            "Recovery: `plex-etl discover --source "
                            f"{source.name}` and deploy the updated catalog, then resync the table (Dagster: "
                            f"launch `{source.name}_cdc` with config resync: [{table}])"
                        )
                    break
                batch.end = here
                continue
            if event.schema != watch.schema or event.table not in watch.tables:
                continue
            batch.events += len(event.rows)
            batch.last_event_time = float(event.timestamp)
            kind = {WriteRowsEvent: "inserts", UpdateRowsEvent: "updates", DeleteRowsEvent: "deletes"}[type(event)]
            _collect(batch, watch, event.table, event.rows, kind, here, after)
    except pymysql.MySQLError as exc:
        raise CaptureError(describe_error(source, exc, start)) from exc
    finally:
        stream.close()
    return batch


def _images(rows: list[dict]) -> list[dict]:
    images = []
    for row in rows:
        if "values" in row:
            images.append(row["values"])
        else:
            images += [row["before_values"], row["after_values"]]
    return images


def _collect(
    batch: ChangeBatch, watch: Watch, table: str, rows: list[dict], kind: str, here: Position,
    after: dict[str, Position],
) -> None:
    images = _images(rows)
    if table in watch.captured and here > after.get(table, Position("", 0)):
        key = watch.captured[table]
        batch.keys.setdefault(table, set()).update(tuple(image[c] for c in key) for image in images)
        batch.counts.setdefault(table, Counter())[kind] += len(rows)
    for child, hop, columns in watch.ancestors.get(table, []):
        if here > after.get(child, Position("", 0)):
            batch.ancestor_values.setdefault((child, hop), set()).update(
                tuple(image[c] for c in columns) for image in images
            )


def _ddl_tables(query: str, schema: str, watch: Watch) -> list[str]:
    """The captured tables a DDL statement names (or whose ancestors it names)."""
    names = {m.lower() for m in re.findall(r"`?([A-Za-z0-9_$]+)`?(?=\s|\(|,|;|$)", query)}
    hit = []
    for table in watch.tables:
        if table.lower() in names and (schema == watch.schema or f"{watch.schema.lower()}" in query.lower()):
            hit.append(table)
    affected = set()
    for table in hit:
        if table in watch.captured:
            affected.add(table)
        affected.update(child for child, _, _ in watch.ancestors.get(table, []))
    return sorted(affected)


def current_position(source: Source) -> Position:
    """The end of the source's binary log now (SHOW MASTER STATUS)."""
    connection = pymysql.connect(**connection_settings(source))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW MASTER STATUS")
            row = cursor.fetchone()
    except pymysql.MySQLError as exc:
        raise CaptureError(describe_error(source, exc, Position("?", 0))) from exc
    finally:
        connection.close()
    if not row:
        raise CaptureError(f"{source.describe()}: the binary log is off (SHOW MASTER STATUS is empty)")
    return Position(row[0], int(row[1]))
