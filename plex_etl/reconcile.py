"""Whole-table reconciliation: does the warehouse hold every MySQL row exactly once, with MySQL's values?

This compares whole tables, day by day, with figures computed inside MySQL and inside the
warehouse (no row travels while they agree): per day, the row count, the sum of a hash of each
row's primary key and the sum of a hash of each row's canonical text (every replicated column,
spelled alike on both sides: plex_etl/canonical.py). MySQL reads each table once for all three.

A day whose figures differ is narrowed down as data-diff does: the day's rows are split into 256
buckets by their key hash, on both sides; the differing buckets are split again, and so on until
they hold a few rows, which are then read from both sides with their canonical values to name the
missing and extra keys and, for a changed row, the column and both values. A few days at most are
narrowed (DRILL_DAYS); the days that differ are exactly the partitions to reload
(`partitions_to_reload`). A table without a primary key is compared as a multiset per day (counts
and row hashes) and its differing days named, with no narrowing.

Snapshot tables are compared as their latest snapshot against the table as it is now.

Tables too large to hash every value every day (catalog row estimate above the plan's
`value_check_rows`) hash the values of a rotating share of their days each run, and of the recent
days always; counts and keys are compared on every day (canonical.Coverage, `value_coverage`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from plex_etl.canonical import Coverage, RowDigest, Scope, field_count
from plex_etl.catalog.plan import SourcePlan
from plex_etl.extract.spec import ReplicatedTable
from plex_etl.extract.sql import digest_query, row_digest, rows_query
from plex_etl.warehouse.base import Digest, Warehouse

if TYPE_CHECKING:  # imported where used: loading Definitions needs no SQLAlchemy
    import sqlalchemy as sa

EXAMPLES = 5  # examples named of each kind (missing, extra, changed)
NAMED_VALUES = 100  # value differences collected per table (the description shows EXAMPLES)
DRILL_DAYS = 3  # differing days narrowed down to rows
BUCKET_DIGITS = 2  # hex digits of the key hash added per narrowing level: 256 buckets
MAX_DIGITS = 8
ROW_LIMIT = 2_000  # rows read from each side once the differing buckets hold no more
DEEPER_BUCKETS = 4  # differing buckets narrowed further when they hold more


@dataclass(frozen=True)
class DayDifference:
    day: dt.date
    mysql: Digest
    warehouse: Digest

    def describe(self, keyed: bool = True) -> str:
        m, w = self.mysql.rows, self.warehouse.rows
        if m != w:
            what = f"{abs(m - w):,} {'missing' if m > w else 'extra'}"
        elif not keyed:
            what = "same count, different rows"
        elif self.mysql.keys != self.warehouse.keys:
            what = "same count, different keys"
        else:
            what = "same keys, different values"
        return f"{self.day}: MySQL {m:,} rows, warehouse {w:,} ({what})"


@dataclass(frozen=True)
class ValueDifference:
    """A value of a row present on both sides that differs: the row's key, its day, the column
    and both values as a user reads them."""

    key: str
    day: dt.date
    column: str
    mysql: str
    warehouse: str

    def describe(self) -> str:
        return f"{self.key} ({self.day}): {self.column}: MySQL {self.mysql}, warehouse {self.warehouse}"


@dataclass
class TableReconciliation:
    source: str
    table: str
    strategy: str
    mysql_rows: int
    warehouse_rows: int
    differences: list[DayDifference]
    keys_compared: bool  # False: no primary key, rows compared as a multiset per day
    first_day: dt.date
    missing_keys: list[str] = field(default_factory=list)  # examples: in MySQL, not in the warehouse
    extra_keys: list[str] = field(default_factory=list)  # examples: in the warehouse, not in MySQL
    changed_values: list[ValueDifference] = field(default_factory=list)  # up to NAMED_VALUES
    values: str = "every day"  # the days whose values were compared (Coverage.describe)
    weak_columns: tuple[str, ...] = ()  # compared by NULL-ness only (canonical.py, null_only)
    note: str = ""

    @property
    def equal(self) -> bool:
        return not self.differences

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    def partitions_to_reload(self, today: dt.date) -> list[dt.date]:
        """The partitions whose reload repairs the differences (undated and early rows live in
        the first partition, future-dated ones are loaded with today's)."""
        if self.strategy == "snapshot":
            return [today] if self.differences else []
        return sorted({min(max(d.day, self.first_day), today) for d in self.differences})

    def differences_before(self, day: dt.date) -> list[DayDifference]:
        """Differences on days before `day`: not explained by rows that changed since the last
        load of a day that the next tick reloads anyway."""
        return [d for d in self.differences if d.day < day and self.strategy != "snapshot"]

    @property
    def basis(self) -> str:
        """What was compared."""
        what = "counts, keys and values" if self.keys_compared else "counts and row values (no primary key)"
        if self.values != "every day":
            what += f" (values on {self.values})"
        if self.weak_columns:
            what += f"; NULL only for {', '.join(self.weak_columns)} (JSON re-encoded by BigQuery)"
        return what

    def describe(self) -> str:
        head = (
            f"{self.name} ({self.strategy}): MySQL {self.mysql_rows:,} rows, warehouse {self.warehouse_rows:,}"
        )
        note = "; " + self.note if self.note else ""
        if self.equal:
            return f"{head}: equal ({self.basis}{note})"
        lines = [f"{head}: {len(self.differences)} day(s) differ ({self.basis}{note})"]
        lines += [f"  {d.describe(self.keys_compared)}" for d in self.differences[:10]]
        if len(self.differences) > 10:
            lines.append(f"  ... {len(self.differences) - 10} more days")
        if self.missing_keys:
            lines.append(f"  missing in the warehouse, e.g. {'; '.join(self.missing_keys)}")
        if self.extra_keys:
            lines.append(f"  extra in the warehouse, e.g. {'; '.join(self.extra_keys)}")
        if self.changed_values:
            shown = "; ".join(v.describe() for v in self.changed_values[:EXAMPLES])
            more = len(self.changed_values) - EXAMPLES
            lines.append(f"  values differ, e.g. {shown}" + (f" ({more} more)" if more > 0 else ""))
        return "\n".join(lines)


def value_coverage(plan: SourcePlan, spec: ReplicatedTable, today: dt.date) -> Coverage:
    """The days whose values one comparison of `spec` hashes: every day, unless the table's row
    estimate exceeds `value_check_rows`; then 1 day in ceil(estimate / value_check_rows) (a new
    share each day, so every day within that many days) and the table's lookback days always."""
    if spec.plan.strategy == "snapshot" or plan.value_check_rows <= 0:
        return Coverage()
    cycle = math.ceil(spec.table.row_estimate / plan.value_check_rows)
    return Coverage.rolling(cycle, today, today - dt.timedelta(days=plan.lookback_for(spec.plan) - 1))


def error_text(exc: Exception) -> str:
    """One line for a failure while comparing a table: the driver's own message, not the SQL."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error with the statement
    lines = str(cause).splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _mysql_digests(connection: sa.Connection, sql: str) -> dict[Any, Digest]:
    import sqlalchemy as sa

    digests: dict[Any, Digest] = {}
    for group, rows, keys, values in connection.execute(sa.text(sql)):
        if isinstance(group, str) and len(group) == 10 and group[4] == "-":
            group = dt.date.fromisoformat(group)
        digests[group] = Digest(int(rows), int(keys or 0), int(values or 0))
    return digests


def reconcile_table(
    connection: sa.Connection, warehouse: Warehouse, spec: ReplicatedTable, today: dt.date,
    coverage: Coverage | None = None,
) -> TableReconciliation:
    """Compare one replicated table in MySQL (through `connection`) and in the warehouse."""
    target = spec.target
    digest = row_digest(spec, warehouse.kind, coverage)
    landed_columns = warehouse.columns(target.dataset, target.name)
    absent = tuple(c.name for c in digest.columns if landed_columns is not None and c.name not in landed_columns)
    notes = []
    if landed_columns is None:
        notes.append("not loaded into the warehouse yet")
    elif absent:
        # A column the catalog has and the warehouse table has not (added by `discover`, not
        # loaded yet) is compared as NULL: the days with a value in it differ until it is loaded.
        notes.append(f"not in the warehouse table yet: {', '.join(absent)}")

    def landed_digests() -> dict[Any, Digest]:
        if landed_columns is None:
            return {}
        return warehouse.digests(target.dataset, target.name, digest, Scope(), absent=absent)

    snapshot_day = None
    if spec.plan.strategy == "snapshot":  # MySQL's read needs the latest snapshot's day
        landed = landed_digests()
        snapshot_day = max(landed, default=today)
        landed = {snapshot_day: landed[snapshot_day]} if snapshot_day in landed else {}
        notes.insert(0, f"latest snapshot {snapshot_day}" if landed else "no snapshot loaded")
        mysql = _mysql_digests(connection, digest_query(spec, digest, Scope(), snapshot_day))
    else:
        # Both sides at once: MySQL's pass and the warehouse's take about as long.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plex_etl_reconcile") as pool:
            pending = pool.submit(landed_digests)
            mysql = _mysql_digests(connection, digest_query(spec, digest, Scope()))
            landed = pending.result()
    note = "; ".join(notes)
    empty = Digest(0)
    differences = [
        DayDifference(day, mysql.get(day, empty), landed.get(day, empty))
        for day in sorted(set(mysql) | set(landed))
        if mysql.get(day, empty) != landed.get(day, empty)
    ]
    result = TableReconciliation(
        source=spec.source, table=spec.name, strategy=spec.plan.strategy,
        mysql_rows=sum(d.rows for d in mysql.values()), warehouse_rows=sum(d.rows for d in landed.values()),
        differences=differences, keys_compared=bool(digest.key), first_day=spec.first_day,
        values=digest.coverage.describe(today), weak_columns=digest.weak, note=note,
    )
    if digest.key:
        for difference in differences[:DRILL_DAYS]:
            _narrow(connection, warehouse, spec, digest, difference.day, result, landed_columns is not None, absent)
    return result


def _narrow(
    connection: sa.Connection, warehouse: Warehouse, spec: ReplicatedTable, digest: RowDigest, day: dt.date,
    result: TableReconciliation, loaded: bool, absent: tuple[str, ...],
) -> None:
    """Name the rows of `day` that differ: compare key-hash buckets level by level (256 more per
    level) until the differing ones hold at most ROW_LIMIT rows, then read those rows."""
    target = spec.target
    empty = Digest(0)
    within: tuple[str, ...] = ()
    digits = BUCKET_DIGITS
    while True:
        scope = Scope(day, digits, within)
        mysql = _mysql_digests(connection, digest_query(spec, digest, scope))
        landed = warehouse.digests(target.dataset, target.name, digest, scope, absent=absent) if loaded else {}
        differing = sorted(b for b in set(mysql) | set(landed) if mysql.get(b, empty) != landed.get(b, empty))
        if not differing:
            return
        rows = sum(max(mysql.get(b, empty).rows, landed.get(b, empty).rows) for b in differing)
        if rows <= ROW_LIMIT or digits >= MAX_DIGITS:
            break
        within = tuple(differing[:DEEPER_BUCKETS])
        digits += BUCKET_DIGITS
    scope = Scope(day, digits, tuple(differing))
    import sqlalchemy as sa

    in_mysql = [tuple(r) for r in connection.execute(sa.text(rows_query(spec, digest, scope)))]
    in_warehouse = warehouse.canonical_rows(target.dataset, target.name, digest, scope, absent=absent) if loaded else []
    _compare_rows(digest, day, in_mysql, in_warehouse, result)


def _compare_rows(
    digest: RowDigest, day: dt.date, in_mysql: Sequence[tuple], in_warehouse: Sequence[tuple],
    result: TableReconciliation,
) -> None:
    """Rows as `rows_sql` selects them: key values, then per column its value and fields."""
    shape = [(c.name, field_count(c)) for c in digest.columns]
    # Whether a value is NULL is in its fields, but for a float zero (no field) and a column
    # compared by NULL-ness only: there the value's own NULL-ness (no type map fix applies) is added.
    marked = [c.canonical.kind in ("float", "null_only") for c in digest.columns]
    key_at = [next(i for i, c in enumerate(digest.columns) if c.name == k.name) for k in digest.key]

    def parse(row: tuple) -> tuple[tuple, list[tuple[Any, tuple]]]:
        values, at = [], len(digest.key)
        for column, (_, width) in enumerate(shape):
            fields = tuple(None if f is None else str(f) for f in row[at + 1:at + 1 + width])
            values.append((row[at], (*fields, row[at] is None) if marked[column] else fields))
            at += 1 + width
        return tuple(row[:len(digest.key)]), values

    def by_key(rows: Sequence[tuple]) -> tuple[dict[tuple, tuple], int]:
        keyed: dict[tuple, tuple] = {}
        for row in rows:
            shown, values = parse(row)
            keyed.setdefault(tuple(values[i][1] for i in key_at), (shown, values))
        return keyed, len(rows) - len(keyed)

    mysql, _ = by_key(in_mysql)
    landed, duplicated = by_key(in_warehouse)
    names = [k.name for k in digest.key]
    if duplicated:
        result.extra_keys.append(f"{duplicated} duplicated keys on {day}")
    for keys, examples in ((mysql.keys() - landed.keys(), result.missing_keys),
                           (landed.keys() - mysql.keys(), result.extra_keys)):
        side = mysql if examples is result.missing_keys else landed
        for k in sorted(keys, key=repr)[: max(0, EXAMPLES - len(examples))]:
            examples.append(f"{_key_text(side[k][0], names)} ({day})")
    texts = [c.canonical.kind == "text" for c in digest.columns]

    def value(column: int, side: tuple[Any, tuple]) -> str:
        # Text as both sides hash it (MySQL's driver turns TIME into a timedelta, latin1 into str).
        raw, fields = side
        return _show(fields[1] if texts[column] and fields[1] is not None else raw)

    for k in sorted(mysql.keys() & landed.keys(), key=repr):
        (shown, m), (_, w) = mysql[k], landed[k]
        for i, (name, _) in enumerate(shape):
            if m[i][1] != w[i][1] and len(result.changed_values) < NAMED_VALUES:
                result.changed_values.append(
                    ValueDifference(_key_text(shown, names), day, name, value(i, m[i]), value(i, w[i])))


def _key_text(values: tuple, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={_value_text(v)}" for n, v in zip(names, values, strict=True))


def _value_text(value: object) -> str:
    # NUMERIC keys come back as Decimal('123') from one side and 123 from the other.
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def _show(value: object) -> str:
    """A value as a user reads it in a message (both sides alike)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes | bytearray):
        text = "0x" + bytes(value).hex()
    elif isinstance(value, float | int | Decimal):
        text = str(value)
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, dt.date | dt.time | dt.timedelta):
        text = str(value)
    elif isinstance(value, dict | list):  # BigQuery's JSON, parsed by its client
        text = repr(json.dumps(value, ensure_ascii=False))
    else:
        text = repr(str(value))
    return text if len(text) <= 60 else text[:30] + "..." + text[-27:]  # a difference is often at the end
