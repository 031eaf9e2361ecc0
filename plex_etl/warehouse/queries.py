"""Warehouse queries shared by checks: plain SQL that BigQuery and DuckDB both accept.

Warehouse names are valid unquoted identifiers by construction (catalog/naming.py), so
no dialect-specific quoting is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from plex_etl.warehouse.base import PARTITION_COLUMN


@dataclass(frozen=True)
class OrphanQuery:
    count_sql: str
    examples_sql: str


def orphan_query(
    dataset: str,
    child: str,
    child_columns: tuple[str, ...],
    parent: str,
    parent_columns: tuple[str, ...],
    parent_is_dated: bool,
    examples: int = 5,
) -> OrphanQuery:
    """Child rows whose (non-NULL) key has no parent row in the warehouse.

    A dated parent holds only the days loaded so far, so only child rows within the
    parent's loaded days are judged; a snapshot parent is judged over all its snapshots.
    """
    keys = " AND ".join(f"c.{c} IS NOT NULL" for c in child_columns)
    match = " AND ".join(f"p.{p} = c.{c}" for c, p in zip(child_columns, parent_columns, strict=True))
    where = f"{keys} AND NOT EXISTS (SELECT 1 FROM {dataset}.{parent} p WHERE {match})"
    if parent_is_dated:
        where += (
            f" AND c.{PARTITION_COLUMN} BETWEEN (SELECT MIN({PARTITION_COLUMN}) FROM {dataset}.{parent})"
            f" AND (SELECT MAX({PARTITION_COLUMN}) FROM {dataset}.{parent})"
        )
    rows = f"FROM {dataset}.{child} c WHERE {where}"
    columns = ", ".join(f"c.{c}" for c in child_columns)
    return OrphanQuery(
        count_sql=f"SELECT COUNT(*) AS orphans {rows}",
        examples_sql=f"SELECT DISTINCT {columns} {rows} ORDER BY {columns} LIMIT {int(examples)}",
    )
