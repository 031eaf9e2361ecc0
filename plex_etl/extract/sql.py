"""SQL that reads the rows of a partition range, and counts them per day.

Every identifier is quoted; the only literals are dates formatted here. The day a row
belongs to is computed by the server (`_etl_partition_date`, last column), with the same
expression the WHERE clause bounds, so the rows read and the rows counted always agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plex_etl.catalog.model import Column
from plex_etl.catalog.relationships import quote
from plex_etl.extract.spec import ReplicatedTable
from plex_etl.warehouse.base import PARTITION_COLUMN


@dataclass(frozen=True)
class PartitionQuery:
    rows_sql: str  # data columns then _etl_partition_date
    count_sql: str  # (day, rows) per day
    # The same rows and values as rows_sql, each row as one CSV line (see csv_line), or
    # None when a column cannot travel as text (binary values).
    csv_sql: str | None = None


# Rules whose text may hold a comma, quote or newline: quoted (and quotes doubled). The
# other rules' text is a number, a date/time or a decimal: never quoted, so an unquoted
# NULL can only be NULL. Rules absent from both sets (raw bytes) disable the CSV read.
CSV_QUOTED_RULES = frozenset({"text", "json", "spatial_wkt"})
CSV_PLAIN_RULES = frozenset({
    "integer", "decimal", "decimal_text", "float", "float64_rounded", "bool", "date", "datetime",
    "timestamp", "year", "time_text",
})


_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


def _binary(column: Column) -> bool:
    """Bytes that are not text in a charset: CONVERT(... USING utf8mb4) would not be lossless."""
    return (column.charset or "").lower() == "binary" or column.data_type.lower() in _BINARY_TYPES


def csv_line(expressions: list[tuple[str, str, bool]]) -> str | None:
    """One SQL expression: the row's values as a CSV line, SQL NULL as an unquoted NULL.

    `expressions`: (SQL expression, rule, holds binary bytes) per column. The server prints
    every value in the same canonical text as the text protocol (CONCAT uses the same
    conversions); text is converted to utf8mb4 (as the connection's result charset
    would) and quoted. None when a column's bytes cannot travel as utf8mb4 text.
    """
    parts = []
    for expr, rule, binary in expressions:
        if binary:
            return None
        if rule in CSV_QUOTED_RULES:
            expr = f"CONCAT('\"', REPLACE(CONVERT({expr} USING utf8mb4), '\"', '\"\"'), '\"')"
        elif rule not in CSV_PLAIN_RULES:
            return None
        parts.append(f"IFNULL({expr}, 'NULL')")
    return f"CONCAT_WS(',', {', '.join(parts)})"


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
    selects = [
        (m.select_sql.format(column=f"t.{quote(c.name)}"), m.rule, _binary(c))
        for c, m in zip(spec.table.columns, spec.mapped, strict=True)
    ]
    columns = ", ".join(f"{e} AS {quote(c.name)}" for (e, _, _), c in zip(selects, spec.table.columns, strict=True))
    body = f"{quote(spec.table.name)} t"
    if spec.plan.strategy == "snapshot":
        if start != end:
            raise ValueError(f"{spec.name}: a snapshot reads one day, not {start}..{end}")
        day = f"DATE {_literal(start)}"
    else:
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
        hi = _literal(end + dt.timedelta(days=1))
        day, where = _date_filter(alias, spec.dated.partition_columns, _literal(start), hi)
        body = " ".join([body, *joins, f"WHERE {where}"])
    line = csv_line([*selects, (day, "date", False)])
    return PartitionQuery(
        rows_sql=f"SELECT {columns}, {day} AS {PARTITION_COLUMN} FROM {body}",
        # An empty table gives no row rather than a zero: the same "no rows that day".
        count_sql=f"SELECT {day} AS d, COUNT(*) FROM {body} GROUP BY d",
        csv_sql=f"SELECT {line} FROM {body}" if line else None,
    )
