"""Reading MySQL's row-based binary log from a position: which keys changed, up to where."""

from __future__ import annotations

import codecs
import os
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import HeartbeatLogEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent

from plex_etl.flavor import ServerFlavor, detect_flavor
from plex_etl.mysql import tls_context
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

    def columns(self) -> dict[str, tuple[str, ...]]:
        """Per watched table, the columns whose values a read collects."""
        wanted = {t: list(key) for t, key in self.captured.items()}
        for table, dependents in self.ancestors.items():
            for _, _, columns in dependents:
                wanted.setdefault(table, []).extend(columns)
        return {t: tuple(dict.fromkeys(c)) for t, c in wanted.items()}


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
    # Time (server clock, whole seconds: the binary log's) of the first and last change read.
    first_event_time: float | None = None
    last_event_time: float | None = None
    caught_up: bool = False  # the read reached the end of the log (or follows it live)
    schema_changes: dict[str, str] = field(default_factory=dict)  # table -> message (capture stops)


_DDL = re.compile(r"^\s*(ALTER|DROP|RENAME|TRUNCATE|CREATE)\b", re.IGNORECASE)
# Server errors: purged/unknown position; missing privileges (REPLICATION SLAVE / CLIENT).
_PURGED = {1236}
_PRIVILEGE = {1227, 1044, 1045, 1142, 1370}


def connection_settings(source: Source) -> dict[str, Any]:
    """PyMySQL settings of the capture's connections (the binary-log stream and its queries):
    the source's credentials, timeouts and TLS, as the polling path's."""
    credentials = resolve_credentials(source)
    settings: dict[str, Any] = {
        "host": credentials.host, "port": credentials.port, "user": credentials.user,
        "password": str(credentials.password), "connect_timeout": source.connect_timeout,
        "read_timeout": source.read_timeout,
    }
    if (context := tls_context(source)) is not None:
        settings["ssl"] = context
    return settings


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
            "invalid. Recovery: copy the source's captured tables again "
            f"(`plex-etl capture --source {source.name} --resync all`), "
            "and keep the log longer than the longest pause of change capture."
        )
    if code in _PRIVILEGE:
        return (
            f"{source.describe()}: missing privilege for change capture ({text}). The capture user "
            "needs: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '<user>'@'<host>' "
            "(MariaDB 10.5+: REPLICATION SLAVE, BINLOG MONITOR), plus SELECT on the captured tables."
        )
    return f"{source.describe()}: reading the binary log from {start} failed: {exc}"


@dataclass(frozen=True)
class ServerInfo:
    """What capture needs to know of the source's server: its flavour (each version-specific
    step asks it) and how far its clock is ahead of this process's (binary-log timestamps are
    the server's)."""

    flavor: ServerFlavor
    clock_offset: float  # server clock - local clock, seconds

    def local_time(self, server_timestamp: float) -> float:
        """A server timestamp (a binary-log event's) on this process's clock."""
        return server_timestamp - self.clock_offset


def _pymysql_run(cursor: Any) -> Callable[[str], list[tuple]]:
    def run(sql: str) -> list[tuple]:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]

    return run


def check_server(source: Source) -> ServerInfo:
    """The server's flavour and clock; raise CaptureError naming what it lacks for change capture
    (log_bin ON, binlog_format ROW, binlog_row_image FULL)."""
    connection = pymysql.connect(**connection_settings(source))
    try:
        with connection.cursor() as cursor:
            run = _pymysql_run(cursor)
            flavor = detect_flavor(run)
            status = {k: str(v) for k, v in run("SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                                                "('log_bin', 'binlog_format', 'binlog_row_image')")}
            before = time.time()
            ((server_now,),) = run("SELECT UNIX_TIMESTAMP(NOW(6))")
            offset = float(server_now) - (before + time.time()) / 2
    except pymysql.MySQLError as exc:
        raise CaptureError(describe_error(source, exc, Position("?", 0))) from exc
    finally:
        connection.close()
    wrong = [f"{k}={status.get(k)} (needs {want})" for k, want in
             (("log_bin", "ON"), ("binlog_format", "ROW"), ("binlog_row_image", "FULL"))
             if (status.get(k) or "").upper() != want]
    if wrong:
        raise CaptureError(
            f"{source.describe()}: the binary log is not usable for change capture: {', '.join(wrong)}. "
            "Set log_bin, binlog_format=ROW and binlog_row_image=FULL in the server's configuration."
        )
    return ServerInfo(flavor, offset)


HEARTBEAT_SECONDS = 0.1  # while idle, the server says so this often on a followed log (a 50-byte packet)
FOLLOW_READ_TIMEOUT = 30.0  # a followed log silent this long (no heartbeat either) is reconnected
LIVE_SECONDS = 2.0  # a change committed at most this long ago: the reader is following, not catching up


class BinaryLog:
    """The source's binary log read through one replication connection from `start` (a commit
    boundary), batch after batch.

    Without `follow`, a read ends at the end of the log and the connection is closed with the
    log (`read_changes`). With `follow`, the connection stays open: the server sends each
    transaction as it commits and a heartbeat every HEARTBEAT_SECONDS while there is nothing
    to send. A read then ends at a commit once it has collected changes for `linger` seconds
    while live (so a busy log gives batches of a fraction of a second, not one per commit), at
    the first heartbeat (caught up), or, catching up, after `max_events` row changes or
    `max_seconds`; and at the next commit once `stop` is set. `continues` says whether the
    connection still stands exactly at the end of the last batch (false after a DDL stop or a
    failure: the log must be opened again from the stored positions).
    """

    def __init__(self, source: Source, watch: Watch, start: Position, *, follow: bool = False,
                 server: ServerInfo | None = None) -> None:
        self.source, self.watch, self.follow, self.server = source, watch, follow, server
        self.position = start
        self.continues = True
        settings = connection_settings(source)
        only_events: list[type] = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent]
        if follow:
            settings["read_timeout"] = FOLLOW_READ_TIMEOUT
            only_events.append(HeartbeatLogEvent)
        self._stream = BinLogStreamReader(
            connection_settings=settings,
            server_id=replica_server_id(source),
            resume_stream=True, log_file=start.file, log_pos=start.pos, blocking=follow,
            slave_heartbeat=HEARTBEAT_SECONDS if follow else None,
            only_events=only_events, only_tables=sorted(watch.tables), only_schemas=[watch.schema],
            # A table id names one table definition until the server restarts (a restart starts
            # a new log file, where the library forgets its map) or the table is altered (new
            # id): its map event need not be decoded again for every row event. Decoding it was
            # most of the reading time (column metadata rebuilt per event).
            freeze_schema=True,
            enable_logging=False,  # its settings at INFO each time a log is opened
        )
        self._needed = watch.columns()
        self._images = KeyImages()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> BinaryLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _live(self, event_time: float) -> bool:
        now = time.time() + (self.server.clock_offset if self.server else 0.0)
        return now - event_time <= LIVE_SECONDS

    def read(
        self,
        after: dict[str, Position],
        *,
        max_events: int = 20_000,
        max_seconds: float = 10.0,
        linger: float = 0.0,
        stop: threading.Event | None = None,
    ) -> ChangeBatch:
        """The changes from `self.position` to the batch's end (see the class). A row change at
        or before `after[table]` (that table's own position) is skipped for it. A DDL statement
        on a watched table ends the batch before it and is reported in `schema_changes` for the
        captured tables it concerns."""
        source, watch, stream = self.source, self.watch, self._stream
        start = self.position
        batch = ChangeBatch(start=start, end=start)
        if stop is not None and stop.is_set():
            return batch
        deadline = time.monotonic() + max_seconds
        first_change: float | None = None  # when this read saw its first row change
        in_transaction = False
        self.continues = False  # until the read ends where the next one can go on
        try:
            while True:
                asked = time.monotonic()
                event = stream.fetchone()
                if event is None:  # not following: the end of the log
                    batch.caught_up = True
                    if not in_transaction and batch.end < Position(stream.log_file or start.file,
                                                                   stream.log_pos or start.pos):
                        batch.end = Position(stream.log_file, stream.log_pos)
                    break
                here = Position(stream.log_file, stream.log_pos)
                if isinstance(event, HeartbeatLogEvent):
                    # The server had nothing more to send when it sent this. Waited for, it says the
                    # read is at the end of the log now; read from the socket's buffer at once, it
                    # is news from a pause of the writers somewhere in a backlog still to read.
                    at_end = time.monotonic() - asked >= HEARTBEAT_SECONDS / 2
                    live = batch.last_event_time is not None and self._live(batch.last_event_time)
                    if not in_transaction and batch.end < here:
                        batch.end = here
                    if at_end or live or not batch.events:
                        batch.caught_up = at_end or live
                        break
                    continue
                if isinstance(event, XidEvent):
                    batch.end = here
                    in_transaction = False
                    now = time.monotonic()
                    if batch.events >= max_events or now > deadline or (stop is not None and stop.is_set()):
                        break
                    if (self.follow and first_change is not None and now - first_change >= linger
                            and batch.last_event_time is not None and self._live(batch.last_event_time)):
                        batch.caught_up = True  # following the log as it is written
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
                                f"{source.name}` and deploy the updated catalog, then resync the table "
                                f"(`plex-etl capture --source {source.name} --resync {table}`)"
                            )
                        return batch  # the connection is past the statement: `continues` stays false
                    batch.end = here
                    continue
                if event.schema != watch.schema or event.table not in watch.tables:
                    continue
                in_transaction = True
                if first_change is None:
                    first_change = time.monotonic()
                kind = {WriteRowsEvent: "inserts", UpdateRowsEvent: "updates", DeleteRowsEvent: "deletes"}[type(event)]
                rows, images = self._images.read(event, self._needed[event.table])
                batch.events += rows
                batch.last_event_time = float(event.timestamp)
                if batch.first_event_time is None:
                    batch.first_event_time = float(event.timestamp)
                _collect(batch, watch, event.table, rows, images, kind, here, after)
        except pymysql.MySQLError as exc:
            raise CaptureError(describe_error(source, exc, start)) from exc
        self.position = batch.end
        self.continues = not in_transaction
        return batch


def read_changes(
    source: Source,
    watch: Watch,
    start: Position,
    after: dict[str, Position],
    *,
    max_events: int = 20_000,
    max_seconds: float = 10.0,
) -> ChangeBatch:
    """One read from `start` to the end of the log, or to the first commit after `max_events`
    row changes or `max_seconds` (see BinaryLog.read)."""
    with BinaryLog(source, watch, start) as log:
        return log.read(after, max_events=max_events, max_seconds=max_seconds)


def _images(rows: list[dict]) -> list[dict]:
    images = []
    for row in rows:
        if "values" in row:
            images.append(row["values"])
        else:
            images += [row["before_values"], row["after_values"]]
    return images


# Bytes of a value in a row image, for the types whose size the table map fixes (fsp and
# decimal sizes are added per column), and the length prefix of the others.
_FIXED_SIZE = {
    FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4, FIELD_TYPE.LONGLONG: 8,
    FIELD_TYPE.FLOAT: 4, FIELD_TYPE.DOUBLE: 8, FIELD_TYPE.YEAR: 1, FIELD_TYPE.DATE: 3, FIELD_TYPE.TIME: 3,
    FIELD_TYPE.DATETIME: 8, FIELD_TYPE.TIMESTAMP: 4, FIELD_TYPE.TIME2: 3, FIELD_TYPE.DATETIME2: 5,
    FIELD_TYPE.TIMESTAMP2: 4,
}
_INTEGERS = {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG}
_DECIMAL_DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def _value_size(column: Any) -> tuple[int, int] | None:
    """(fixed size, length-prefix size) of `column`'s values (one of them 0); None for a type
    this reader does not know (the library then decodes the event)."""
    kind = column.type
    if kind in _FIXED_SIZE:
        fsp = getattr(column, "fsp", 0) if kind in (FIELD_TYPE.TIME2, FIELD_TYPE.DATETIME2,
                                                    FIELD_TYPE.TIMESTAMP2) else 0
        return _FIXED_SIZE[kind] + (fsp + 1) // 2, 0
    if kind == FIELD_TYPE.NEWDECIMAL:
        integral, fraction = column.precision - column.decimals, column.decimals
        return (integral // 9 * 4 + _DECIMAL_DIGIT_BYTES[integral % 9]
                + fraction // 9 * 4 + _DECIMAL_DIGIT_BYTES[fraction % 9]), 0
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return 0, 2 if column.max_length > 255 else 1
    if kind in (FIELD_TYPE.BLOB, FIELD_TYPE.GEOMETRY, FIELD_TYPE.JSON):
        return 0, column.length_size
    if kind in (FIELD_TYPE.ENUM, FIELD_TYPE.SET):
        return column.size, 0
    if kind == FIELD_TYPE.BIT:
        return column.bytes, 0
    return None


def _key_decoder(column: Any) -> Callable[[bytes], Any] | None:
    """Decodes a key column's value exactly as mysql-replication does (integers, strings in
    the column's character set); None for other types (the library then decodes the event)."""
    if column.type in _INTEGERS:
        signed = not column.unsigned
        return lambda raw: int.from_bytes(raw, "little", signed=signed)
    if column.type in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        if column.character_set_name is None:
            return lambda raw: raw.decode()
        encoding = RowsEvent.charset_to_encoding(column.character_set_name)
        try:
            codecs.lookup(encoding)
        except LookupError:  # the library keeps such values as bytes
            return lambda raw: raw
        return lambda raw: raw.decode(encoding)
    return None


class KeyImages:
    """The values of a few columns (keys, referenced columns) of each row image of a rows
    event. The library decodes every column of every image (datetimes, decimals, strings)
    into dicts, most of a catch-up's time; here the other columns are only stepped over by
    their size, read from the table map. Events of tables with a column type not known here,
    or a wanted column of another type than integer or string, are decoded by the library."""

    def __init__(self) -> None:
        # table id -> (the library's table object, wanted columns, plan or None)
        self._plans: dict[int, tuple[Any, tuple[str, ...], list | None]] = {}

    def read(self, event: Any, wanted: tuple[str, ...]) -> tuple[int, list[dict[str, Any]]]:
        """(rows changed, images restricted to `wanted`): an update has two images per row."""
        plan = self._plan(event, wanted)
        if plan is None:
            images = [{c: image.get(c) for c in wanted} for image in _images(event.rows)]
            return len(event.rows), images
        data = event.packet.read(event.event_size - event.packet.read_bytes)
        bitmaps = [event.columns_present_bitmap]
        if isinstance(event, UpdateRowsEvent):
            bitmaps.append(event.columns_present_bitmap2)
        images: list[dict[str, Any]] = []
        pos, end = 0, len(data)
        try:
            while pos < end:
                for bitmap in bitmaps:
                    image, pos = _read_image(data, pos, bitmap, plan)
                    images.append(image)
        except IndexError:
            pos = -1
        if pos != end:  # a size taken wrongly would read other columns' bytes as keys
            raise CaptureError(f"{event.schema}.{event.table}: rows event of {end} bytes not read as the "
                               "table map describes; report it with the server version")
        return len(images) // len(bitmaps), images

    def _plan(self, event: Any, wanted: tuple[str, ...]) -> list | None:
        table = event.table_map[event.table_id]
        cached = self._plans.get(event.table_id)
        if cached is not None and cached[0] is table and cached[1] == wanted:
            return cached[2]
        plan: list | None = []
        for column in event.columns:
            size = _value_size(column)
            decode = _key_decoder(column) if column.name in wanted else None
            if size is None or (column.name in wanted and decode is None):
                plan = None
                break
            plan.append((size[0], size[1], column.name if decode else None, decode))
        if plan is not None and len({p[2] for p in plan if p[2]}) != len(set(wanted)):
            plan = None  # a wanted column is not in the table map (no column names)
        self._plans[event.table_id] = (table, wanted, plan)
        return plan


def _read_image(data: bytes, pos: int, bitmap: bytes, plan: list) -> tuple[dict[str, Any], int]:
    """One row image from `pos`: its wanted values (None when NULL or absent), and the end."""
    present = [i for i in range(len(plan)) if bitmap[i >> 3] >> (i & 7) & 1]
    nulls_size = (len(present) + 7) // 8
    nulls, pos = data[pos:pos + nulls_size], pos + nulls_size
    image: dict[str, Any] = {p[2]: None for p in plan if p[2]}
    for n, i in enumerate(present):
        if nulls[n >> 3] >> (n & 7) & 1:
            continue
        fixed, prefix, name, decode = plan[i]
        if prefix:
            size = int.from_bytes(data[pos:pos + prefix], "little")
            pos += prefix
        else:
            size = fixed
        if decode is not None:
            image[name] = decode(data[pos:pos + size])
        pos += size
    return image, pos


def _collect(
    batch: ChangeBatch, watch: Watch, table: str, rows: int, images: list[dict], kind: str, here: Position,
    after: dict[str, Position],
) -> None:
    if table in watch.captured and here > after.get(table, Position("", 0)):
        key = watch.captured[table]
        batch.keys.setdefault(table, set()).update(tuple(image[c] for c in key) for image in images)
        batch.counts.setdefault(table, Counter())[kind] += rows
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
    """The end of the source's binary log now (its flavour's status statement)."""
    connection = pymysql.connect(**connection_settings(source))
    try:
        with connection.cursor() as cursor:
            run = _pymysql_run(cursor)
            rows = run(detect_flavor(run).binary_log_status_statement)
    except pymysql.MySQLError as exc:
        raise CaptureError(describe_error(source, exc, Position("?", 0))) from exc
    finally:
        connection.close()
    if not rows:
        raise CaptureError(f"{source.describe()}: the binary log is off (its status statement shows nothing)")
    return Position(rows[0][0], int(rows[0][1]))
