"""SQL that reads the rows of a partition range, and counts them per day.

Every identifier is quoted; the only literals are dates formatted here. The day a row
belongs to is computed by the server (`_etl_partition_date`, last column), with the same
expression the WHERE clause bounds, so the rows read and the rows counted always agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plex_etl.catalog.relationships import quote
from plex_etl.extract.spec import ReplicatedTable
from plex_etl.warehouse.base import PARTITION_COLUMN


@dataclass(frozen=True)
class PartitionQuery:
    rows_sql: str  # data columns then _etl_partition_date
    count_sql: str  # (day, rows) per day


def _literal(day: dt.date) -> str:
    return f"'{day.isoformat()}'"


def _date_filter(alias: str, columns: tuple[str, ...], lo: str, hi: str) -> tuple[str, str]:
    """(day expression, WHERE clause) for COALESCE(columns) in [lo, hi).

    The WHERE is the COALESCE spelled out column by column so that each branch can use
    an index on its column (a COALESCE(...) comparison cannot).
    """
    refs = [f"{alias}.{quote(c)}" for c in columns]
    expr = refs[0] if len(refs) == 1 else f"COALESCE({', '.join(refs)})"
    branches = []
    for i, ref in enumerate(refs):
        nulls = [f"{r} IS NULL" for r in refs[:i]]
        branches.append("(" + " AND ".join([*nulls, f"{ref} >= {lo}", f"{ref} < {hi}"]) + ")")
    return f"DATE({expr})", " OR ".join(branches)


def partition_query(spec: ReplicatedTable, start: dt.date, end: dt.date) -> PartitionQuery:
    """Rows of the partitions [start, end] (inclusive) of a replicated table."""
    columns = ", ".join(
        m.select_sql.format(column=f"t.{quote(c.name)}") + f" AS {quote(c.name)}"
        for c, m in zip(spec.table.columns, spec.mapped, strict=True)
    )
    source = f"{quote(spec.table.name)} t"
    if spec.plan.strategy == "snapshot":
        if start != end:
            raise ValueError(f"{spec.name}: a snapshot reads one day, not {start}..{end}")
        day = f"DATE {_literal(start)}"
        return PartitionQuery(
            rows_sql=f"SELECT {columns}, {day} AS {PARTITION_COLUMN} FROM {source}",
            count_sql=f"SELECT {day}, COUNT(*) FROM {source}",
        )
    joins = []
    alias = "t"
    for i, hop in enumerate(spec.hops, start=1):
        parent = f"p{i}"
        on = " AND ".join(
            f"{parent}.{quote(r)} = {alias}.{quote(c)}"
            for c, r in zip(hop.relationship.columns, hop.relationship.referenced_columns, strict=True)
        )
        joins.append(f"JOIN {quote(hop.table.name)} {parent} ON {on}")
        alias = parent
    lo = f"{_literal(start)}"
    hi = f"{_literal(end + dt.timedelta(days=1))}"
    day, where = _date_filter(alias, spec.dated.partition_columns, lo, hi)
    body = " ".join([source, *joins, f"WHERE {where}"])
    return PartitionQuery(
        rows_sql=f"SELECT {columns}, {day} AS {PARTITION_COLUMN} FROM {body}",
        count_sql=f"SELECT {day} AS d, COUNT(*) FROM {body} GROUP BY d",
    )
