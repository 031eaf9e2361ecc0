"""A replicated table: the catalog's table, its plan, its mapped types and its warehouse target."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from plex_etl.catalog.drift import ColumnDrift, SchemaDriftError, column_drift, drifted_table, read_live_columns
from plex_etl.catalog.model import Catalog, Column, Relationship, Table
from plex_etl.catalog.naming import DEFAULT_DATASET, warehouse_table
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.mysql import runner
from plex_etl.typemap import MappedType, map_column
from plex_etl.warehouse.base import TargetTable, WarehouseColumn


@dataclass(frozen=True)
class Hop:
    """One join from a child towards the table that holds the partition date."""

    relationship: Relationship
    table: Table


@dataclass(frozen=True)
class ReplicatedTable:
    source: str
    table: Table
    plan: TablePlan
    mapped: tuple[MappedType, ...]
    hops: tuple[Hop, ...]  # child -> ... -> dated ancestor; empty for other strategies
    dated: TablePlan  # the plan whose partition columns decide the day (itself unless child)
    dataset: str  # the warehouse dataset of `target`
    primary_key: tuple[str, ...]  # warehouse names of the key columns
    retention_days: int  # snapshots: days of history kept in the warehouse
    first_day: dt.date  # the history floor: undated rows and rows dated before it land on this day
    key_bounds: bool = False  # reads may be bounded by a key range (extract/access.py)
    # How MySQL's columns differ from the catalog's at this load (catalog/drift.py): `table` is
    # the catalog's table with it applied (dropped columns out, new ones in).
    drift: ColumnDrift = field(default_factory=ColumnDrift)

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def warehouse_name(self) -> str:
        return warehouse_table_name(self.source, self.table)

    @property
    def column_names(self) -> tuple[str, ...]:
        """The warehouse names of the table's columns, in catalog order."""
        return tuple(_warehouse_column(c) for c in self.table.columns)

    @cached_property
    def target(self) -> TargetTable:
        """The warehouse table. Built on first use: its columns' Arrow types import pyarrow,
        which loading the code location (asset names and metadata) does without."""
        columns = tuple(
            WarehouseColumn(
                name=name,
                arrow_type=m.arrow_type,
                bigquery_type=m.bigquery_type,
                local_type=m.local_type,
                nullable=True,  # a MySQL NOT NULL can still yield NULL after a counted fix (zero dates)
            )
            for name, m in zip(self.column_names, self.mapped, strict=True)
        )
        return TargetTable(
            dataset=self.dataset,
            name=self.warehouse_name,
            columns=columns,
            primary_key=self.primary_key,
            description=f"{self.source}.{self.name} ({self.plan.strategy}), replicated by plex_etl",
        )


def _warehouse_column(column: Column) -> str:
    return column.warehouse_name or column.name


def warehouse_table_name(source: str, table: Table) -> str:
    """`<source>_<table>` (catalog/naming.py): the names the analysts' queries already use."""
    return warehouse_table(source, table.warehouse_name or table.name)


def replicated_table(
    catalog: Catalog, plan: SourcePlan, name: str, dataset: str = DEFAULT_DATASET, drift: ColumnDrift | None = None,
) -> ReplicatedTable:
    """A table as the catalog describes it, or, with `drift`, as MySQL has it now."""
    drift = drift or ColumnDrift()
    table = drifted_table(catalog.table(name), drift)
    table_plan = plan.tables[name]
    mapped = tuple(map_column(c, table_plan.type_overrides.get(c.name)) for c in table.columns)
    hops: list[Hop] = []
    dated = table_plan
    while dated.strategy == "child":
        rel = catalog.relationship(dated.parent or "")
        hops.append(Hop(rel, catalog.table(rel.referenced_table)))
        dated = plan.tables[rel.referenced_table]
    pk = {c.name: _warehouse_column(c) for c in table.columns}
    return ReplicatedTable(
        catalog.source, table, table_plan, mapped, tuple(hops), dated, dataset,
        primary_key=tuple(pk[c] for c in table.primary_key),
        retention_days=plan.snapshot_retention_days, first_day=plan.first_day,
        key_bounds=plan.key_bounds if table_plan.key_bounds is None else table_plan.key_bounds,
        drift=drift,
    )


def live_replicated_table(
    connection: Any, catalog: Catalog, plan: SourcePlan, name: str, dataset: str = DEFAULT_DATASET,
) -> ReplicatedTable:
    """The table as MySQL has it now (the catalog's columns that still exist, then the new ones
    the type map can load), read from INFORMATION_SCHEMA on `connection` (SQLAlchemy or raw
    mysqlclient) just before a load.

    SchemaDriftError when the read cannot happen: the table, a table it is read through, or a
    column its plan needs (primary key, date columns, parent relationship) is gone."""
    spec = replicated_table(catalog, plan, name, dataset)
    live = read_live_columns(runner(connection), [spec.table.name, *(h.table.name for h in spec.hops)])
    where = f"{spec.source}.{name}"
    fix = (f"run `plex-etl discover --source {spec.source}`, then fix the plan entry of {name} "
           "(rename it to the table's new name, or `include: false`)")
    if name not in live:
        raise SchemaDriftError(f"{where}: MySQL table {name} no longer exists (renamed or dropped?): {fix}")
    for table, columns in _needed_columns(spec).items():
        if table not in live:
            raise SchemaDriftError(f"{where}: MySQL table {table}, which its days come from, no longer exists: {fix}")
        gone = [c for c in columns if c not in {col.name for col in live[table]}]
        if gone:
            raise SchemaDriftError(
                f"{where}: column(s) {', '.join(f'{table}.{c}' for c in gone)} no longer exist in MySQL, and its "
                f"read needs them (primary key, date column or parent relationship): {fix}")
    drift = column_drift(catalog.table(name), live[name], spec.plan.type_overrides)
    return replicated_table(catalog, plan, name, dataset, drift)


def _needed_columns(spec: ReplicatedTable) -> dict[str, list[str]]:
    """The columns a table's read names besides its data columns, by MySQL table: its primary
    key, the relationships it is read through, and the date columns that decide the day."""
    needed: dict[str, list[str]] = {spec.table.name: list(spec.table.primary_key)}
    child = spec.table.name
    for hop in spec.hops:
        needed.setdefault(child, []).extend(hop.relationship.columns)
        needed.setdefault(hop.table.name, []).extend(hop.relationship.referenced_columns)
        child = hop.table.name
    if spec.hops:
        needed[child].extend(spec.hops[-1].table.primary_key)  # the key range of its reads (extract/access.py)
    if spec.plan.strategy != "snapshot":
        needed.setdefault(child, []).extend(spec.dated.partition_columns)
    return needed


def read_bounds(
    spec: ReplicatedTable, start: dt.date, end: dt.date, today: dt.date, first_partition: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    """The day range a load of partitions [start, end] reads and replaces.

    The first partition (`first_partition`, the start of the rolling daily window) also holds
    the whole history: the rows dated before it and the undated ones; today's partition the
    rows dated after today. Those sides are left open (None), so that every row of the table
    belongs to exactly one loadable partition, while each row keeps its own day in the
    warehouse. A snapshot reads the whole table as it is now and lands it as today's
    snapshot, whatever was asked.
    """
    if spec.plan.strategy == "snapshot":
        return today, today
    return (None if start <= first_partition else start), (None if end >= today else end)


def parse_days(text: str) -> tuple[dt.date, dt.date]:
    """'2001-03-04' or '2001-03-04...2001-05-06' (inclusive) as (first, last)."""
    first, _, last = text.strip().partition("...")
    try:
        days = dt.date.fromisoformat(first.strip()), dt.date.fromisoformat((last or first).strip())
    except ValueError:
        raise ValueError(f"days {text!r}: expected YYYY-MM-DD or YYYY-MM-DD...YYYY-MM-DD") from None
    if days[0] > days[1]:
        raise ValueError(f"days {text!r}: the first day is after the last")
    return days


def narrow_bounds(
    spec: ReplicatedTable, bounds: tuple[dt.date | None, dt.date | None], days: tuple[dt.date, dt.date],
    today: dt.date,
) -> tuple[dt.date | None, dt.date | None]:
    """The read of `days` only, inside a load whose read is `bounds` (see read_bounds): e.g. the
    few days of history that reconciliation found different, reloaded through the first
    partition without re-reading the rest of the history. The undated rows live on
    `first_day` (a range starting there or before reads them too), the future-dated ones with
    today (a range ending today or after reads them too)."""
    lo, hi = bounds
    first, last = days
    if spec.plan.strategy == "snapshot":
        raise ValueError(f"{spec.source}.{spec.name}: a snapshot loads the whole table; it has no days to choose")
    if (lo is not None and first < lo) or (hi is not None and last > hi):
        raise ValueError(
            f"{spec.source}.{spec.name}: days {first}...{last} are not all in the partitions of this run, "
            f"which hold {lo or 'every day'} to {hi or 'every later day'}"
        )
    return (None if first <= spec.first_day else first), (None if last >= today else last)


INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})


def new_key_column(spec: ReplicatedTable) -> str | None:
    """The table's own primary key when it is one integer column (an id that grows as rows are
    inserted): a bounded read also takes the rows above the warehouse's largest key. None for
    snapshots (read whole) and other keys."""
    key = spec.table.primary_key
    if spec.plan.strategy == "snapshot" or len(key) != 1:
        return None
    return key[0] if spec.table.column(key[0]).data_type.lower() in INTEGER_TYPES else None


def load_mode(spec: ReplicatedTable) -> str:
    """How a load lands: 'upsert' (merge by primary key) for every dated table with a key, so
    a row whose day moved (its own date or an ancestor's) leaves its old partition; snapshots
    keep one copy of each key per day, and a table without a key can only replace days."""
    return "upsert" if spec.plan.strategy != "snapshot" and spec.target.primary_key else "replace"
