"""Warehouse queries shared by checks: plain SQL that BigQuery and DuckDB both accept.

Warehouse names are valid unquoted identifiers by construction (catalog/naming.py), so
no dialect-specific quoting is needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plex_etl.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN, Warehouse, day_range


def latest_view_sql(dataset: str, table: str, day: dt.date) -> str:
    """The `<table>_latest` view of a snapshot table: the snapshot of `day` only, a literal
    partition filter (BigQuery reads one partition; re-created at each snapshot load)."""
    return f"SELECT * FROM {dataset}.{table} WHERE {PARTITION_COLUMN} = DATE '{day.isoformat()}'"


def latest_partition(warehouse: Warehouse, dataset: str, table: str) -> dt.date | None:
    """The newest partition date of a table (None when it has no rows)."""
    rows = warehouse.query(f"SELECT MAX({PARTITION_COLUMN}) AS latest FROM {dataset}.{table}")
    value = rows.column(0)[0].as_py() if rows.num_rows else None
    return value if isinstance(value, dt.date) or value is None else dt.date.fromisoformat(str(value))


@dataclass(frozen=True)
class OrphanQuery:
    count_sql: str  # child rows without their parent row
    keys_sql: str  # per missing parent key: the key, its child rows, when the first of them landed


def orphan_query(
    dataset: str,
    child: str,
    child_columns: tuple[str, ...],
    parent: str,
    parent_columns: tuple[str, ...],
    keys: int = 10_000,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    parent_latest: dt.date | None = None,
) -> OrphanQuery:
    """Child rows whose (non-NULL) key has no parent row in the warehouse, whatever their day.

    Only the child's partitions in [start, end] are looked at (None: open). A snapshot parent
    is looked up in its snapshot of `parent_latest` (see `latest_partition`: a literal, so BigQuery
    reads one partition), or in all its snapshots when that is None. Whether such a row is a
    problem depends on MySQL and on what was loaded since (plex_etl/orphans.py); `keys_sql` lists
    the `keys` parent keys whose child rows landed last, first.
    """
    where = " AND ".join(f"c.{c} IS NOT NULL" for c in child_columns)
    match = " AND ".join(f"p.{p} = c.{c}" for c, p in zip(child_columns, parent_columns, strict=True))
    if start is not None or end is not None:
        where += f" AND {day_range('c.' + PARTITION_COLUMN, start, end)}"
    if parent_latest is not None:
        match += f" AND p.{PARTITION_COLUMN} = DATE '{parent_latest.isoformat()}'"
    rows = f"FROM {dataset}.{child} c WHERE {where} AND NOT EXISTS (SELECT 1 FROM {dataset}.{parent} p WHERE {match})"
    columns = ", ".join(f"c.{c}" for c in child_columns)
    return OrphanQuery(
        count_sql=f"SELECT COUNT(*) AS orphans {rows}",
        keys_sql=f"SELECT {columns}, COUNT(*) AS child_rows, MIN(c.{LOADED_AT_COLUMN}) AS landed {rows} "
                 f"GROUP BY {columns} ORDER BY landed DESC, {columns} LIMIT {int(keys)}",
    )
