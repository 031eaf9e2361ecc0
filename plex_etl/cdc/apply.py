"""Change-capture steps for a source: first copies, read the log, re-read, commit with the position."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.catalog.relationships import quote
from plex_etl.cdc.reader import (
    BinaryLog,
    CaptureError,
    ChangeBatch,
    Position,
    ServerInfo,
    TableState,
    Watch,
    check_server,
)
from plex_etl.extract.spec import DEFAULT_DATASET, ReplicatedTable, replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.extract.stream import ExtractionError, PartitionStream
from plex_etl.flavor import ServerFlavor
from plex_etl.mysql import raw_connection
from plex_etl.sources import Source
from plex_etl.typemap import convert
from plex_etl.warehouse.base import PARTITION_COLUMN, ChangeWarehouse, TableChanges, Warehouse

KEYS_PER_QUERY = 1_000


@dataclass
class StepResult:
    """What one step did: per table the row changes read (inserts/updates/deletes), rows merged
    and keys deleted; the positions; lag; first copies; stopped tables and why."""

    start: Position | None = None
    end: Position | None = None
    changes: dict[str, Counter] = field(default_factory=dict)
    rows_merged: dict[str, int] = field(default_factory=dict)
    keys_deleted: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)  # table -> rows of its first copy
    stopped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # tables no longer captured: position forgotten
    days: dict[str, set] = field(default_factory=dict)  # table -> days (_etl_partition_date) of rows merged
    # From the commit in MySQL of the step's oldest change to the step's commit in the warehouse.
    lag_seconds: float = 0.0
    caught_up: bool = True
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: copy, read, reread, commit

    def totals(self) -> Counter:
        total: Counter = Counter()
        for counts in self.changes.values():
            total.update(counts)
        return total


def _watch(specs: dict[str, ReplicatedTable], schema: str) -> Watch:
    captured = {t: s.table.primary_key for t, s in specs.items()}
    ancestors: dict[str, list[tuple[str, int, tuple[str, ...]]]] = {}
    for t, spec in specs.items():
        for i, hop in enumerate(spec.hops):
            ancestors.setdefault(hop.table.name, []).append((t, i, hop.relationship.referenced_columns))
    return Watch(schema, captured, ancestors)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return str(value)


def _literal(connection: Any, value: str) -> str:
    return "'" + connection.escape_string(value.encode("utf-8", errors="surrogateescape")).decode(
        "utf-8", errors="surrogateescape") + "'"


def _in(connection: Any, refs: list[str], values: Iterable[tuple[str, ...]]) -> str:
    if len(refs) == 1:
        return f"{refs[0]} IN ({', '.join(_literal(connection, v[0]) for v in values)})"
    rows = ", ".join("(" + ", ".join(_literal(connection, x) for x in v) + ")" for v in values)
    return f"({', '.join(refs)}) IN ({rows})"


def _chunks(items: list, size: int = KEYS_PER_QUERY) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _fetch(connection: Any, sql: str) -> tuple[tuple[bytes | None, ...], ...]:
    connection.query(sql)
    return connection.store_result().fetch_row(maxrows=0, how=0)


def _child_keys(connection: Any, spec: ReplicatedTable, hop: int, values: set[tuple]) -> set[tuple[str, ...]]:
    """Keys of `spec`'s rows whose path to their dated ancestor goes through a changed row of
    hop `hop`'s table (its day may have moved, or its parent gone)."""
    joins, alias = [], "t"
    for i, h in enumerate(spec.hops[:hop], start=1):
        on = " AND ".join(f"p{i}.{quote(r)} = {alias}.{quote(c)}"
                          for c, r in zip(h.relationship.columns, h.relationship.referenced_columns, strict=True))
        joins.append(f"JOIN {quote(h.table.name)} p{i} ON {on}")
        alias = f"p{i}"
    refs = [f"{alias}.{quote(c)}" for c in spec.hops[hop].relationship.columns]
    keys: set[tuple[str, ...]] = set()
    texts = sorted({tuple(_text(x) for x in v) for v in values if None not in v})
    pk = ", ".join(f"t.{quote(c)}" for c in spec.table.primary_key)
    for chunk in _chunks(texts):
        sql = f"SELECT {pk} FROM {quote(spec.table.name)} t {' '.join(joins)} WHERE {_in(connection, refs, chunk)}"
        keys.update(tuple(_text(x) for x in row) for row in _fetch(connection, sql))
    return keys


def _to_table(spec: ReplicatedTable, rows: tuple[tuple[bytes | None, ...], ...]) -> pa.Table:
    """Text-protocol rows of `rows_sql` -> the target's record batch, with the type map (as polling)."""
    schema = spec.target.arrow_schema
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    arrays = [convert(pa.array(values, type=pa.binary()), mapped, column.name)[0]
              for column, mapped, values in zip(spec.table.columns, spec.mapped, columns, strict=False)]
    day = pa.array(columns[-1], type=pa.binary())
    arrays.append(pc.cast(day.cast(pa.string()), pa.date32()))
    return pa.Table.from_arrays(arrays, schema=schema)


def reread(
    source: Source, specs: dict[str, ReplicatedTable], batch: ChangeBatch
) -> dict[str, TableChanges]:
    """The current rows of the changed keys (and of the children of changed ancestors), read in
    one consistent snapshot with each table's normal select; keys no longer there are deletes."""
    connection = raw_connection(source)
    result: dict[str, TableChanges] = {}
    try:
        connection.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        connection.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        for table, spec in specs.items():
            keys = {tuple(_text(x) for x in k) for k in batch.keys.get(table, ())}
            for (child, hop), values in batch.ancestor_values.items():
                if child == table:
                    keys |= _child_keys(connection, spec, hop, values)
            if not keys:
                continue
            refs = [f"t.{quote(c)}" for c in spec.table.primary_key]
            rows_sql = partition_query(spec, None, None).rows_sql
            if " WHERE " in rows_sql:
                raise CaptureError(f"{spec.name}: unexpected WHERE in the whole-table select")
            parts, present = [], set()
            for chunk in _chunks(sorted(keys)):
                where = f" WHERE {_in(connection, refs, chunk)}"
                present.update(tuple(_text(x) for x in row) for row in _fetch(
                    connection, f"SELECT {', '.join(refs)} FROM {quote(spec.table.name)} t{where}"))
                parts.append(_to_table(spec, _fetch(connection, rows_sql + where)))
            gone = sorted(keys - present)
            key_fields = [spec.target.arrow_schema.field(c) for c in spec.target.primary_key]
            deletes = pa.Table.from_arrays(
                [pa.array([k[i] for k in gone], type=pa.string()).cast(f.type) for i, f in enumerate(key_fields)],
                schema=pa.schema(key_fields),
            )
            result[table] = TableChanges(spec.target, pa.concat_tables(parts), deletes)
        connection.query("COMMIT")
    finally:
        connection.close()
    return result


class _SnapshotPosition:
    """Connections for PartitionStream whose `START TRANSACTION WITH CONSISTENT SNAPSHOT` also
    gives the binary-log position the snapshot stands at, by the server's documented way:

    - MariaDB and Percona Server report it themselves: the session status variables
      `Binlog_snapshot_file`/`_position`, read right after the snapshot starts.
    - Oracle MySQL has no such variables, and a position read before or after the snapshot
      starts is not enough: a transaction is written to the binary log before InnoDB commits
      it, so a snapshot can miss a transaction that a position (also `performance_schema.
      log_status`'s) already counts. A second connection takes a brief `LOCK TABLES ... READ`
      on the copied table and the tables its day comes from: it waits for every transaction
      that wrote them to finish, and holds back new writes to them (reads go on) while the
      snapshot starts and the log's position is read (`flavor.binary_log_status_statement`),
      then unlocks. This is MySQL Shell's way without the RELOAD privilege; mysqldump's
      `FLUSH TABLES WITH READ LOCK` would stop every write of the server, and wait behind any
      long query, for the same moment.
    """

    LOCK_WAIT_SECONDS = 10  # lock_wait_timeout of the brief lock: writers are not held longer

    def __init__(self, flavor: ServerFlavor, tables: list[str]) -> None:
        self.flavor = flavor
        self.tables = tables
        self.position: Position | None = None

    def connect(self, source: Source) -> Any:
        owner = self
        connection = raw_connection(source)

        class _Connection:
            def query(self, sql: str) -> None:
                if not sql.startswith("START TRANSACTION WITH CONSISTENT SNAPSHOT"):
                    connection.query(sql)
                elif owner.flavor.snapshot_position_from_status:
                    connection.query(sql)
                    rows = dict(_fetch(connection, "SHOW STATUS LIKE 'binlog_snapshot_%'"))
                    file = (rows.get(b"Binlog_snapshot_file") or b"").decode()
                    if not file:
                        raise CaptureError(f"{source.describe()}: no binary-log position for the snapshot "
                                           "(is log_bin on?)")
                    owner.position = Position(file, int(rows[b"Binlog_snapshot_position"]))
                else:
                    owner.position = owner._under_read_lock(source, lambda: connection.query(sql))

            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

        return _Connection()

    def _under_read_lock(self, source: Source, start_snapshot: Callable[[], None]) -> Position:
        import MySQLdb

        tables = ", ".join(f"{quote(t)} READ" for t in self.tables)
        lock = raw_connection(source)
        try:
            try:
                lock.query(f"SET SESSION lock_wait_timeout = {self.LOCK_WAIT_SECONDS}")
                lock.query(f"LOCK TABLES {tables}")
            except MySQLdb.MySQLError as exc:
                code = exc.args[0] if exc.args else None
                if code in (1044, 1142, 1227):
                    raise CaptureError(
                        f"{source.describe()} is {self.flavor.describe()}, which does not report the binary-log "
                        "position of a consistent snapshot (MariaDB and Percona Server do): the first copy takes "
                        f"it under a brief read lock on {', '.join(self.tables)}, which needs "
                        f"GRANT LOCK TABLES ON {quote(source.database)}.* TO the capture user ({exc})"
                    ) from exc
                if code == 1205:
                    raise CaptureError(
                        f"{source.describe()}: writers held {', '.join(self.tables)} for more than "
                        f"{self.LOCK_WAIT_SECONDS} s; the brief read lock that gives a first copy its "
                        "binary-log position was not taken (nothing copied; tried again at the next step)"
                    ) from exc
                raise
            start_snapshot()
            rows = _fetch(lock, self.flavor.binary_log_status_statement)
            if not rows:
                raise CaptureError(f"{source.describe()}: the binary log is off ("
                                   f"{self.flavor.binary_log_status_statement} shows nothing)")
            return Position(rows[0][0].decode(), int(rows[0][1]))
        finally:
            lock.close()  # ends the lock (UNLOCK TABLES) at once


def copy_table(
    source: Source, spec: ReplicatedTable, warehouse: Warehouse, flavor: ServerFlavor,
    progress: Callable[[str], None] | None = None,
) -> tuple[Position, int]:
    """The whole table from one consistent snapshot into the warehouse (replacing what it held);
    returns the snapshot's binary-log position and the rows copied."""
    tables = list(dict.fromkeys([spec.table.name, *(h.table.name for h in spec.hops)]))
    snapshot = _SnapshotPosition(flavor, tables)
    stream = PartitionStream(source, spec, None, None, connect=snapshot.connect, progress=progress)
    try:
        result = warehouse.load(spec.target, stream, None, None, mode="replace")
    except ExtractionError as exc:
        if isinstance(exc.__cause__, CaptureError):  # the start position's own message
            raise exc.__cause__ from None
        raise
    if snapshot.position is None:
        raise CaptureError(f"{source.name}.{spec.name}: the snapshot's binary-log position is unknown")
    return snapshot.position, result.rows


Hook = Callable[[str], None]
RESYNC_REQUESTED = "resync requested"  # a stored state: the table is copied again at the next step


class Stopped(BaseException):
    """Raised in a first copy when a stop was requested: the copy is abandoned (the warehouse keeps
    what it held), not finished. A BaseException, like KeyboardInterrupt: the extraction wraps
    errors (`except Exception`) but lets it through, and the warehouse load rolls back."""


class Capture:
    """Change capture of one source's captured tables, step after step.

    A step first copies the tables without a stored position (new to capture, `resync`ed, or
    whose stored state is RESYNC_REQUESTED) whole from a consistent snapshot whose position
    becomes theirs; then reads a batch of the binary log from the oldest position of the
    tables still captured (a table stopped by a schema change waits for its resync), re-reads
    the changed keys and commits rows, deletes and the new positions in one warehouse
    transaction. The states are read from the warehouse at the first step and after `reload`;
    between steps they are the ones this object committed (`PositionConflict` if another
    writer moved them: `reload` and go on).

    With `follow`, the binary-log connection stays open between steps (see BinaryLog): what a
    long-lived worker does. `hook(stage)` is called at "read" (changes read and re-read,
    nothing committed) and "committed" (batch and positions committed): the worker checks its
    lock there, tests kill the step there.
    """

    def __init__(
        self, source: Source, catalog: Catalog, plan: SourcePlan, warehouse: Any, dataset: str = DEFAULT_DATASET,
        *, hook: Hook | None = None, flavor: ServerFlavor | None = None,
    ) -> None:
        self.source, self.catalog, self.plan, self.warehouse, self.dataset = source, catalog, plan, warehouse, dataset
        self.hook = hook
        self.flavor = flavor  # None: the server's, detected at the first step
        self.specs = {t: replicated_table(catalog, plan, t, dataset=dataset) for t in plan.captured}
        self.states: dict[str, TableState] | None = None
        self.requested: set[str] = set()  # tables whose stored state asks for a resync
        self.stored_text: dict[str, str] = {}  # table -> its state as stored (what a commit expects)
        self.committed_at = 0.0  # monotonic time of the last commit of a batch
        self.server: ServerInfo | None = None
        self.log: BinaryLog | None = None

    @property
    def store(self) -> ChangeWarehouse:
        return self.warehouse

    def reload(self) -> None:
        """Read the stored states again at the next step (and open the log again from them)."""
        self.states = None
        self.close()

    def close(self) -> None:
        if self.log is not None:
            log, self.log = self.log, None
            log.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _load_states(self, result: StepResult) -> dict[str, TableState]:
        stored = self.store.cdc_positions(self.dataset, self.source.name)
        for table in sorted(set(stored) - set(self.specs)):  # switched back to polling
            self.store.drop_cdc_position(self.dataset, self.source.name, table)
            result.dropped.append(table)
        self.requested = {t for t, text in stored.items() if t in self.specs and text == RESYNC_REQUESTED}
        self.stored_text = {t: text for t, text in stored.items() if t in self.specs}
        return {t: TableState.parse(text) for t, text in self.stored_text.items() if t not in self.requested}

    def _copy(self, table: str, stop: threading.Event | None, result: StepResult) -> None:
        assert self.states is not None and self.flavor is not None

        def progress(_message: str) -> None:
            if stop is not None and stop.is_set():
                raise Stopped(f"{self.source.name}.{table}: first copy abandoned (stop requested)")

        position, rows = copy_table(self.source, self.specs[table], self.warehouse, self.flavor, progress)
        expected = {table: self.stored_text.get(table)}
        self.store.apply_changes(self.dataset, self.source.name, [], {table: str(position)}, expected)
        self.states[table] = TableState(position)
        self.stored_text[table] = str(position)
        self.requested.discard(table)
        result.snapshots[table] = rows

    def step(
        self,
        *,
        max_events: int = 20_000,
        max_seconds: float = 10.0,
        resync: Iterable[str] = (),
        follow: bool = False,
        linger: float = 0.25,
        stop: threading.Event | None = None,
        position_seconds: float = 0.0,
    ) -> StepResult:
        """One step (see the class): first copies, then one batch of the binary log."""
        result = StepResult()
        if self.states is None:
            self.close()
            self.states = self._load_states(result)
            self.server = None
        if not self.specs:
            return result
        if self.server is None:
            self.server = check_server(self.source)
            self.flavor = self.flavor or self.server.flavor
        states = self.states
        clock = time.monotonic()
        for table in self.specs:
            if table not in states or table in set(resync) or table in self.requested:
                self.close()  # the positions change: the log is opened again after the copies
                self._copy(table, stop, result)
        if result.snapshots:
            result.seconds["copy"] = time.monotonic() - clock
        result.stopped = {t: s.stopped for t, s in states.items() if s.stopped}
        active = {t: self.specs[t] for t in self.specs if not states[t].stopped}
        if not active:
            return result
        after = {t: states[t].position for t in active}
        start = min(after.values())
        watch = _watch(active, self.source.database)
        log = self.log
        if log is None or not log.continues or log.position != start or log.watch != watch or log.follow != follow:
            self.close()
            log = self.log = BinaryLog(self.source, watch, start, follow=follow, server=self.server)
        try:
            clock = time.monotonic()
            batch = log.read(after, max_events=max_events, max_seconds=max_seconds, linger=linger, stop=stop)
            result.seconds["read"], clock = time.monotonic() - clock, time.monotonic()
            changes = reread(self.source, active, batch)
            result.seconds["reread"], clock = time.monotonic() - clock, time.monotonic()
            if self.hook:
                self.hook("read")
            reached = {}
            for table in active:
                position = max(after[table], batch.end)
                if table in batch.schema_changes:
                    reached[table] = TableState(position, batch.schema_changes[table]).text()
                    result.stopped[table] = batch.schema_changes[table]
                else:
                    reached[table] = str(position)
            positions = {t: text for t, text in reached.items() if text != self.stored_text.get(t)}
            # A position that only moved past other tables' transactions is stored at most every
            # `position_seconds` (it only shortens the re-read after a restart); rows, deletes and
            # stops at once.
            due = time.monotonic() - self.committed_at >= position_seconds
            if changes or batch.schema_changes or (positions and due):
                expected = {t: self.stored_text.get(t) for t in positions}
                self.store.apply_changes(self.dataset, self.source.name, list(changes.values()), positions, expected)
                result.seconds["commit"] = time.monotonic() - clock
                self.committed_at = time.monotonic()
                self.stored_text.update(positions)
            states.update({t: TableState.parse(text) for t, text in reached.items()})
        except BaseException:
            self.close()  # the batch was read but may not be committed: read it again from the states
            raise
        finally:
            if not follow:
                self.close()
        committed_at = time.time()
        if self.hook:
            self.hook("committed")
        result.start, result.end, result.caught_up, result.events = start, batch.end, batch.caught_up, batch.events
        result.changes = {t: c for t, c in batch.counts.items() if t in active}
        result.rows_merged = {t: c.upserts.num_rows for t, c in changes.items()}
        result.keys_deleted = {t: c.deletes.num_rows for t, c in changes.items()}
        result.days = {t: set(c.upserts.column(PARTITION_COLUMN).to_pylist()) for t, c in changes.items()
                       if c.upserts.num_rows}
        if batch.first_event_time is not None:
            # The oldest change of the batch: committed in MySQL (whole seconds of the binary
            # log's clock, taken to this process's) until committed in the warehouse.
            result.lag_seconds = max(0.0, committed_at - self.server.local_time(batch.first_event_time))
        return result


def step(
    source: Source,
    catalog: Catalog,
    plan: SourcePlan,
    warehouse: Any,
    dataset: str = DEFAULT_DATASET,
    *,
    max_events: int = 20_000,
    max_seconds: float = 10.0,
    resync: Iterable[str] = (),
    hook: Hook | None = None,
    flavor: ServerFlavor | None = None,
) -> StepResult:
    """One bounded step of change capture for `source`'s captured tables, from the stored
    states, to the end of the log or the bounds (see Capture)."""
    with Capture(source, catalog, plan, warehouse, dataset, hook=hook, flavor=flavor) as capture:
        return capture.step(max_events=max_events, max_seconds=max_seconds, resync=resync)


def stopped_message(result: StepResult) -> str | None:
    if not result.stopped:
        return None
    return "change capture stopped for: " + "; ".join(f"{t}: {m}" for t, m in sorted(result.stopped.items()))


__all__ = ["PARTITION_COLUMN", "Capture", "StepResult", "Stopped", "copy_table", "reread", "step"]
