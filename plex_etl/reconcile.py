"""Whole-table reconciliation: does the warehouse hold every MySQL row exactly once?

A per-load row count only speaks for the days that load read. This compares whole
tables, day by day, with figures that are cheap on both sides (no row travels): per day,
the row count and two order-independent hashes of the primary keys (`Digest`). A day
whose figures differ is then drilled into: its keys are read from both sides (keys only,
a few days at most) to name examples of missing and extra rows. The days that differ are
exactly the partitions to reload (`partitions_to_reload`).

Snapshot tables are compared as their latest snapshot against the table as it is now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plex_etl.extract.spec import ReplicatedTable
from plex_etl.extract.sql import digest_columns, partition_query
from plex_etl.warehouse.base import PARTITION_COLUMN, Digest, Warehouse

if TYPE_CHECKING:  # imported where used: loading Definitions needs no SQLAlchemy
    import sqlalchemy as sa

EXAMPLE_KEYS = 5
DRILL_DAYS = 3  # days whose keys are read to name examples


@dataclass(frozen=True)
class DayDifference:
    day: dt.date
    mysql: Digest
    warehouse: Digest

    def describe(self) -> str:
        m, w = self.mysql.rows, self.warehouse.rows
        what = "same count, different keys" if m == w else f"{abs(m - w):,} {'missing' if m > w else 'extra'}"
        return f"{self.day}: MySQL {m:,} rows, warehouse {w:,} ({what})"


@dataclass
class TableReconciliation:
    source: str
    table: str
    strategy: str
    mysql_rows: int
    warehouse_rows: int
    differences: list[DayDifference]
    keys_compared: bool  # False: no digestible primary key, counts only
    first_day: dt.date
    missing_keys: list[str] = field(default_factory=list)  # examples: in MySQL, not in the warehouse
    extra_keys: list[str] = field(default_factory=list)  # examples: in the warehouse, not in MySQL
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

    def describe(self) -> str:
        head = (
            f"{self.name} ({self.strategy}): MySQL {self.mysql_rows:,} rows, warehouse {self.warehouse_rows:,}"
        )
        if self.equal:
            basis = "counts and keys" if self.keys_compared else "counts (no comparable key)"
            return f"{head}: equal ({basis}{'; ' + self.note if self.note else ''})"
        lines = [f"{head}: {len(self.differences)} day(s) differ{'; ' + self.note if self.note else ''}"]
        lines += [f"  {d.describe()}" for d in self.differences[:10]]
        if len(self.differences) > 10:
            lines.append(f"  ... {len(self.differences) - 10} more days")
        if self.missing_keys:
            lines.append(f"  missing in the warehouse, e.g. {'; '.join(self.missing_keys)}")
        if self.extra_keys:
            lines.append(f"  extra in the warehouse, e.g. {'; '.join(self.extra_keys)}")
        return "\n".join(lines)


def _mysql_digests(connection: sa.Connection, sql: str) -> dict[dt.date, Digest]:
    import sqlalchemy as sa

    digests = {}
    for day, rows, xor, total in connection.execute(sa.text(sql)):
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        digests[day] = Digest(int(rows), int(xor or 0), int(total or 0))
    return digests


def _key_text(values: tuple, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n}={_value_text(v)}" for n, v in zip(names, values, strict=True))


def _value_text(value: object) -> str:
    # NUMERIC keys come back as Decimal('123') from one side and 123 from the other.
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def reconcile_table(
    connection: sa.Connection, warehouse: Warehouse, spec: ReplicatedTable, today: dt.date
) -> TableReconciliation:
    """Compare one replicated table in MySQL (through `connection`) and in the warehouse."""
    target = spec.target
    keyed = bool(digest_columns(spec))
    key = target.primary_key if keyed else ()
    landed = warehouse.digest_by_partition(target.dataset, target.name, key)
    note = ""
    if spec.plan.strategy == "snapshot":
        latest = max(landed, default=today)
        mysql = _mysql_digests(connection, partition_query(spec, latest, latest).digest_sql)
        landed = {latest: landed[latest]} if latest in landed else {}
        note = f"latest snapshot {latest}" if landed else "no snapshot loaded"
    else:
        mysql = _mysql_digests(connection, partition_query(spec, None, None).digest_sql)
    empty = Digest(0)
    differences = [
        DayDifference(day, mysql.get(day, empty), landed.get(day, empty))
        for day in sorted(set(mysql) | set(landed))
        if mysql.get(day, empty) != landed.get(day, empty)
    ]
    result = TableReconciliation(
        source=spec.source, table=spec.name, strategy=spec.plan.strategy,
        mysql_rows=sum(d.rows for d in mysql.values()), warehouse_rows=sum(d.rows for d in landed.values()),
        differences=differences, keys_compared=keyed, first_day=spec.first_day, note=note,
    )
    if target.primary_key:
        _name_examples(connection, warehouse, spec, result)
    return result


def _name_examples(
    connection: sa.Connection, warehouse: Warehouse, spec: ReplicatedTable, result: TableReconciliation
) -> None:
    """Read the keys of the first differing days from both sides and name a few of each."""
    from sqlalchemy import text

    target = spec.target
    names = target.primary_key
    columns = ", ".join(names)
    loaded = warehouse.columns(target.dataset, target.name) is not None
    if not loaded:
        result.note = "; ".join(filter(None, [result.note, "not loaded into the warehouse yet"]))
    for difference in result.differences[:DRILL_DAYS]:
        day = difference.day
        in_mysql = {
            tuple(_value_text(v) for v in row)
            for row in connection.execute(text(partition_query(spec, day, day).keys_sql))
        }
        rows = warehouse.query(
            f"SELECT {columns} FROM {target.dataset}.{target.name} WHERE {PARTITION_COLUMN} = DATE '{day}'"
        ).to_pylist() if loaded else []
        in_warehouse = {tuple(_value_text(v) for v in row.values()) for row in rows}
        if spec.plan.strategy != "snapshot":
            # A key may be in the warehouse twice (two days): that is "extra" too.
            in_warehouse_rows = len(rows)
            if in_warehouse_rows > len(in_warehouse):
                result.extra_keys.append(f"{in_warehouse_rows - len(in_warehouse)} duplicated keys on {day}")
        for keys, examples in ((in_mysql - in_warehouse, result.missing_keys),
                               (in_warehouse - in_mysql, result.extra_keys)):
            for values in sorted(keys)[: max(0, EXAMPLE_KEYS - len(examples))]:
                examples.append(f"{_key_text(values, names)} ({day})")
