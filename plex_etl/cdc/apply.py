"""One change-capture step for a source: first copies, read the log, re-read, commit with the position."""

from __future__ import annotations

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
from plex_etl.cdc.reader import CaptureError, ChangeBatch, Position, TableState, Watch, check_server, read_changes
from plex_etl.extract.spec import DEFAULT_DATASET, ReplicatedTable, replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.extract.stream import PartitionStream
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
    lag_seconds: float = 0.0
    caught_up: bool = True
    events: int = 0

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


class _SnapshotRecorder:
    """A connection for PartitionStream that notes the binary-log position of its snapshot."""

    def __init__(self) -> None:
        self.position: Position | None = None

    def connect(self, source: Source) -> Any:
        recorder = self
        connection = raw_connection(source)

        class _Connection:
            def query(self, sql: str) -> None:
                connection.query(sql)
                if sql.startswith("START TRANSACTION WITH CONSISTENT SNAPSHOT"):
                    rows = dict(_fetch(connection, "SHOW STATUS LIKE 'binlog_snapshot_%'"))
                    file = (rows.get(b"Binlog_snapshot_file") or b"").decode()
                    if not file:
                        raise CaptureError(f"{source.describe()}: no binary-log position for the snapshot "
                                           "(is log_bin on?)")
                    recorder.position = Position(file, int(rows[b"Binlog_snapshot_position"]))

            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

        return _Connection()


def copy_table(source: Source, spec: ReplicatedTable, warehouse: Warehouse) -> tuple[Position, int]:
    """The whole table from one consistent snapshot into the warehouse (replacing what it held);
    returns the snapshot's binary-log position and the rows copied."""
    recorder = _SnapshotRecorder()
    stream = PartitionStream(source, spec, None, None, connect=recorder.connect)
    result = warehouse.load(spec.target, stream, None, None, mode="replace")
    if recorder.position is None:
        raise CaptureError(f"{source.name}.{spec.name}: the snapshot's binary-log position is unknown")
    return recorder.position, result.rows


Hook = Callable[[str], None]


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
) -> StepResult:
    """One bounded step of change capture for `source`'s captured tables.

    Tables without a stored position (new to capture, or in `resync`) are first copied whole
    from a consistent snapshot whose position becomes theirs. Then the log is read from the
    oldest active position and the batch applied (one transaction with the new positions).
    `hook(stage)` is called at "read" (changes read and re-read, nothing committed) and
    "committed" (batch and positions committed): tests kill the step there.
    """
    store: ChangeWarehouse = warehouse
    result = StepResult()
    stream_name = source.name
    captured = plan.captured
    specs = {t: replicated_table(catalog, plan, t, dataset=dataset) for t in captured}
    states = {t: TableState.parse(text) for t, text in store.cdc_positions(dataset, stream_name).items()}
    for table in sorted(set(states) - set(captured)):  # switched back to polling
        store.drop_cdc_position(dataset, stream_name, table)
        result.dropped.append(table)
        del states[table]
    if not captured:
        return result
    check_server(source)
    for table in captured:
        if table in states and table not in set(resync):
            continue
        position, rows = copy_table(source, specs[table], warehouse)
        expected = {table: states[table].text() if table in states else None}
        store.apply_changes(dataset, stream_name, [], {table: str(position)}, expected)
        states[table] = TableState(position)
        result.snapshots[table] = rows
    result.stopped = {t: s.stopped for t, s in states.items() if s.stopped}
    active = {t: specs[t] for t in captured if not states[t].stopped}
    if not active:
        return result
    after = {t: states[t].position for t in active}
    start = min(after.values())
    batch = read_changes(source, _watch(active, source.database), start, after,
                         max_events=max_events, max_seconds=max_seconds)
    changes = reread(source, active, batch)
    if hook:
        hook("read")
    positions = {}
    for table in active:
        reached = max(after[table], batch.end)
        if table in batch.schema_changes:
            positions[table] = TableState(reached, batch.schema_changes[table]).text()
            result.stopped[table] = batch.schema_changes[table]
        elif reached != after[table] or table in changes:
            positions[table] = str(reached)
    expected = {t: states[t].text() for t in positions}
    if positions or changes:
        store.apply_changes(dataset, stream_name, list(changes.values()), positions, expected)
    if hook:
        hook("committed")
    result.start, result.end, result.caught_up, result.events = start, batch.end, batch.caught_up, batch.events
    result.changes = {t: c for t, c in batch.counts.items() if t in active}
    result.rows_merged = {t: c.upserts.num_rows for t, c in changes.items()}
    result.keys_deleted = {t: c.deletes.num_rows for t, c in changes.items()}
    if batch.last_event_time is not None:
        result.lag_seconds = max(0.0, time.time() - batch.last_event_time)
    return result


def stopped_message(result: StepResult) -> str | None:
    if not result.stopped:
        return None
    return "change capture stopped for: " + "; ".join(f"{t}: {m}" for t, m in sorted(result.stopped.items()))


__all__ = ["PARTITION_COLUMN", "StepResult", "copy_table", "reread", "step"]
