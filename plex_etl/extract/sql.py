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
class KeyRange:
    """A pre-filter on the dated table's integer primary key: `lo <= key < hi` (None: open).

    Found by index lookups (plex_etl/extract/access.py) so that a read examines about the
    window's rows; the date condition is always kept, so it only ever removes rows that the
    date condition would remove too, as long as the key follows the date within the margin
    the range was widened by."""

    column: str  # the dated table's primary key column
    lo: int | None
    hi: int | None
    margin_days: int = 0  # the range covers the window widened by this many days each side

    def describe(self) -> str:
        return f"{self.column} in [{'' if self.lo is None else self.lo}, {'' if self.hi is None else self.hi})"


@dataclass(frozen=True)
class PartitionQuery:
    rows_sql: str  # data columns then _etl_partition_date
    count_sql: str  # (day, rows) per day
    # (day, rows, key xor, key sum) per day: what reconciliation compares (see key_digest).
    digest_sql: str = ""
    # The primary key columns of the rows (empty when the table has no primary key).
    keys_sql: str = ""


def _literal(day: dt.date) -> str:
    return f"'{day.isoformat()}'"


def _date_filter(
    alias: str, columns: tuple[str, ...], lo: dt.date | None, hi: dt.date | None, first_day: dt.date
) -> tuple[str, str | None]:
    """(day expression, WHERE clause or None) for the rows whose day is in [lo, hi).

    A row's day is its date expression (a column, or the COALESCE of several) clamped to
    `first_day`: a row dated before the first partition, or not dated at all (NULL, or a
    child without its parent), belongs to the first partition, so every row has exactly
    one day. `lo` None means "from the first partition on" (undated rows included), `hi`
    None "and every later day" (rows dated in the future keep their own day).

    The WHERE is the COALESCE spelled out column by column so that each branch can use
    an index on its column (a COALESCE(...) comparison cannot).
    """
    refs = [f"{alias}.{quote(c)}" for c in columns]
    expr = refs[0] if len(refs) == 1 else f"COALESCE({', '.join(refs)})"
    first = f"DATE {_literal(first_day)}"
    day = f"GREATEST(COALESCE(DATE({expr}), {first}), {first})"
    if lo is not None and lo <= first_day:
        lo = None
    if lo is None and hi is None:
        return day, None
    branches = []
    for i, ref in enumerate(refs):
        bounds = [f"{ref} >= {_literal(lo)}"] if lo is not None else []
        bounds += [f"{ref} < {_literal(hi)}"] if hi is not None else []
        branches.append("(" + " AND ".join([*(f"{r} IS NULL" for r in refs[:i]), *bounds]) + ")")
    if lo is None:
        branches.append("(" + " AND ".join(f"{r} IS NULL" for r in refs) + ")")
    return day, " OR ".join(branches)


def key_columns(spec: ReplicatedTable) -> list[str]:
    """The columns (as `alias.column`) that hold the dated table's primary key in a row of the
    partition read: the dated table's own key, then, down the hops, each child column that
    references it (factlineas.IDComprobante for factcabecera.IDComprobante). Empty when the
    dated table's key is not a single column. A bound on the lowest of them lets a child be
    read through its foreign-key index instead of through a scan of the parent."""
    root = spec.hops[-1].table if spec.hops else spec.table
    if len(root.primary_key) != 1:
        return []
    column = root.primary_key[0]
    refs = [f"{f'p{len(spec.hops)}' if spec.hops else 't'}.{quote(column)}"]
    for i in range(len(spec.hops), 0, -1):
        rel = spec.hops[i - 1].relationship
        if column not in rel.referenced_columns:
            break
        column = rel.columns[rel.referenced_columns.index(column)]
        refs.append(f"{'t' if i == 1 else f'p{i - 1}'}.{quote(column)}")
    return refs


def _with_hops(spec: ReplicatedTable) -> tuple[str, str]:
    """`table t LEFT JOIN parent p1 ... ` up to the dated ancestor, and the alias of that ancestor."""
    joins = [f"{quote(spec.table.name)} t"]
    alias = "t"
    for i, hop in enumerate(spec.hops, start=1):
        parent = f"p{i}"
        on = " AND ".join(
            f"{parent}.{quote(r)} = {alias}.{quote(c)}"
            for c, r in zip(hop.relationship.columns, hop.relationship.referenced_columns, strict=True)
        )
        # LEFT: a child whose parent is missing (or whose key is NULL) still has a day.
        joins.append(f"LEFT JOIN {quote(hop.table.name)} {parent} ON {on}")
        alias = parent
    return " ".join(joins), alias


def rows_by_key_query(spec: ReplicatedTable, columns: tuple[str, ...], count: int) -> str:
    """`columns` and the day (the partition expression; NULL for a snapshot) of the rows whose
    `columns` equal one of `count` value tuples, bound as :k<i>_<j>. Index lookups when `columns`
    are a key (the referenced columns of a relationship)."""
    refs = ", ".join(f"t.{quote(c)}" for c in columns)
    rows = [", ".join(f":k{i}_{j}" for j in range(len(columns))) for i in range(count)]
    match = (f"{refs} IN ({', '.join(rows)})" if len(columns) == 1
             else f"({refs}) IN ({', '.join(f'({row})' for row in rows)})")
    if spec.plan.strategy == "snapshot":
        return f"SELECT {refs}, NULL AS d FROM {quote(spec.table.name)} t WHERE {match}"
    from_joins, alias = _with_hops(spec)
    day, _ = _date_filter(alias, spec.dated.partition_columns, None, None, spec.first_day)
    return f"SELECT {refs}, {day} AS d FROM {from_joins} WHERE {match}"


def partition_query(
    spec: ReplicatedTable, start: dt.date | None, end: dt.date | None, keys: KeyRange | None = None,
    above: tuple[str, int] | None = None,
) -> PartitionQuery:
    """Rows whose day is in [start, end] (inclusive); None leaves that side open.

    Dated tables: `start` None (or the plan's first day) includes the rows dated before it
    and the undated ones, `end` None includes the rows dated after it (see _date_filter).
    Snapshots read the whole table as the day `start` (== `end`).

    `keys` adds a primary-key range of the dated table to the WHERE (on every column that
    holds that key, see key_columns), next to the date condition, which stays: the rows
    selected are the same as without it whenever no row of the window lies outside it.

    `above` (column, value) also takes, whatever their day, the rows whose own integer key is
    above `value` (the warehouse's largest): rows inserted since the last load that the days
    read do not hold (back-dated, undated, older than the window). They come once (a second
    branch of the read, which excludes the window's rows) and keep their own day; the load
    merges them by key (extract/spec.py::new_key_column).
    """
    columns = ", ".join(
        f"{m.select_sql.format(column=f't.{quote(c.name)}')} AS {quote(c.name)}"
        for c, m in zip(spec.table.columns, spec.mapped, strict=True)
    )
    body = f"{quote(spec.table.name)} t"
    new_rows = ""
    if spec.plan.strategy == "snapshot":
        if start is None or start != end:
            raise ValueError(f"{spec.name}: a snapshot reads one day, not {start}..{end}")
        day = f"DATE {_literal(start)}"
    else:
        from_joins, alias = _with_hops(spec)
        hi = end + dt.timedelta(days=1) if end is not None else None
        day, window = _date_filter(alias, spec.dated.partition_columns, start, hi, spec.first_day)
        where = window
        if keys is not None:
            bounds = [f"{ref} >= {int(keys.lo)}" for ref in key_columns(spec) if keys.lo is not None]
            bounds += [f"{ref} < {int(keys.hi)}" for ref in key_columns(spec) if keys.hi is not None]
            if bounds:
                where = " AND ".join([*([f"({where})"] if where else []), *bounds])
        body = " ".join([from_joins, *([f"WHERE {where}"] if where else [])])
        if above is not None and window is not None:
            column, value = above
            # `IS NOT TRUE`: exactly the rows the first branch does not take (its key range
            # included), NULL dates too.
            new_rows = (f" UNION ALL SELECT {columns}, {day} AS {PARTITION_COLUMN} FROM {from_joins} "
                        f"WHERE t.{quote(column)} > {int(value)} AND ({where}) IS NOT TRUE")
    return PartitionQuery(
        rows_sql=f"SELECT {columns}, {day} AS {PARTITION_COLUMN} FROM {body}{new_rows}",
        # An empty table gives no row rather than a zero: the same "no rows that day".
        count_sql=f"SELECT {day} AS d, COUNT(*) FROM {body} GROUP BY d",
        digest_sql=f"SELECT {day} AS d, {', '.join(key_digest(spec))} FROM {body} GROUP BY d",
        keys_sql=(f"SELECT {', '.join(f't.{quote(c)}' for c in spec.table.primary_key)} FROM {body}"
                  if spec.table.primary_key else ""),
    )


# Key columns whose text is spelled the same by MySQL, BigQuery and DuckDB (CAST to text):
# only these take part in the key digest; other keys are compared by count alone.
DIGEST_RULES = frozenset({"integer", "text", "date"})


def digest_columns(spec: ReplicatedTable) -> tuple[str, ...]:
    """The MySQL key columns of the digest, or () when the table has no digestible key."""
    rules = {c.name: m.rule for c, m in zip(spec.table.columns, spec.mapped, strict=True)}
    key = spec.table.primary_key
    return key if key and all(rules[c] in DIGEST_RULES for c in key) else ()


def key_digest(spec: ReplicatedTable) -> list[str]:
    """COUNT(*), then two order-independent hashes of the keys: the BIT_XOR of 60 bits and
    the SUM of 28 other bits of MD5(k1|k2|...), as every warehouse computes them too."""
    columns = digest_columns(spec)
    if not columns:
        return ["COUNT(*)", "0", "0"]
    text = "CONCAT_WS('|', " + ", ".join(f"CONVERT(t.{quote(c)} USING utf8mb4)" for c in columns) + ")"
    return [
        "COUNT(*)",
        f"BIT_XOR(CAST(CONV(SUBSTRING(MD5({text}), 1, 15), 16, 10) AS UNSIGNED))",
        f"SUM(CAST(CONV(SUBSTRING(MD5({text}), 16, 7), 16, 10) AS UNSIGNED))",
    ]
