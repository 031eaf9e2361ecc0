"""SQL that reads the rows of a partition range, and counts them per day.

Every identifier is quoted; the only literals are dates formatted here. The day a row
belongs to is computed by the server (`_etl_partition_date`, last column), with the same
expression the WHERE clause bounds, so the rows read and the rows counted always agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from plex_etl.canonical import CanonicalColumn, Coverage, RowDigest, Scope, canonical, digest_sql, rows_sql
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


@dataclass(frozen=True)
class PartitionRead:
    """The parts of a partition read: `source` (the table and its joins, aliased `t`, `p1`...),
    `where` (None: every row) and `day` (the server's expression of a row's day)."""

    source: str
    where: str | None
    day: str


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


def partition_read(
    spec: ReplicatedTable, start: dt.date | None, end: dt.date | None, keys: KeyRange | None = None
) -> PartitionRead:
    """The rows whose day is in [start, end] (inclusive); None leaves that side open.

    Dated tables: `start` None (or the plan's first day) includes the rows dated before it
    and the undated ones, `end` None includes the rows dated after it (see _date_filter).
    Snapshots read the whole table as the day `start` (== `end`).

    `keys` adds a primary-key range of the dated table to the WHERE (on every column that
    holds that key, see key_columns), next to the date condition, which stays: the rows
    selected are the same as without it whenever no row of the window lies outside it.
    """
    if spec.plan.strategy == "snapshot":
        if start is None or start != end:
            raise ValueError(f"{spec.name}: a snapshot reads one day, not {start}..{end}")
        return PartitionRead(f"{quote(spec.table.name)} t", None, f"DATE {_literal(start)}")
    source, alias = _with_hops(spec)
    hi = end + dt.timedelta(days=1) if end is not None else None
    day, where = _date_filter(alias, spec.dated.partition_columns, start, hi, spec.first_day)
    if keys is not None:
        bounds = [f"{ref} >= {int(keys.lo)}" for ref in key_columns(spec) if keys.lo is not None]
        bounds += [f"{ref} < {int(keys.hi)}" for ref in key_columns(spec) if keys.hi is not None]
        if bounds:
            where = " AND ".join([*([f"({where})"] if where else []), *bounds])
    return PartitionRead(source, where, day)


def partition_query(
    spec: ReplicatedTable, start: dt.date | None, end: dt.date | None, keys: KeyRange | None = None,
    above: tuple[str, int] | None = None,
) -> PartitionQuery:
    """The rows of `partition_read(spec, start, end, keys)` and their count per day.

    `above` (column, value) also takes, whatever their day, the rows whose own integer key is
    above `value` (the warehouse's largest): rows inserted since the last load that the days
    read do not hold (back-dated, undated, older than the window). They come once (a second
    branch of the read, which excludes the first branch's rows) and keep their own day; the
    load merges them by key (extract/spec.py::new_key_column)."""
    read = partition_read(spec, start, end, keys)
    columns = ", ".join(
        f"{m.select_sql.format(column=f't.{quote(c.name)}')} AS {quote(c.name)}"
        for c, m in zip(spec.table.columns, spec.mapped, strict=True)
    )
    body = read.source + (f" WHERE {read.where}" if read.where else "")
    new_rows = ""
    if above is not None and read.where is not None:
        column, value = above
        # `IS NOT TRUE`: exactly the rows the first branch does not take (its key range
        # included), NULL dates too.
        new_rows = (f" UNION ALL SELECT {columns}, {read.day} AS {PARTITION_COLUMN} FROM {read.source} "
                    f"WHERE t.{quote(column)} > {int(value)} AND ({read.where}) IS NOT TRUE")
    return PartitionQuery(
        rows_sql=f"SELECT {columns}, {read.day} AS {PARTITION_COLUMN} FROM {body}{new_rows}",
        # An empty table gives no row rather than a zero: the same "no rows that day".
        count_sql=f"SELECT {read.day} AS d, COUNT(*) FROM {body} GROUP BY 1",
    )


# ---------------------------------------------------------------------------------------
# Reconciliation: the MySQL side of the comparison (plex_etl/canonical.py spells the values).


def row_digest(spec: ReplicatedTable, warehouse: str, coverage: Coverage | None = None) -> RowDigest:
    """What reconciliation hashes of `spec` for a warehouse of kind `warehouse`: its key and every
    replicated column (the catalog's: retired columns are not in it), with their MySQL values."""
    columns = tuple(
        CanonicalColumn(name, m.select_sql.format(column=f"t.{quote(c.name)}"), canonical(c, m, warehouse),
                        nullable=c.nullable)
        for name, c, m in zip(spec.column_names, spec.table.columns, spec.mapped, strict=True)
    )
    by_name = {c.name: column for c, column in zip(spec.table.columns, columns, strict=True)}
    key = tuple(by_name[k] for k in spec.table.primary_key)
    return RowDigest(key, columns, coverage or Coverage())


def digest_query(spec: ReplicatedTable, digest: RowDigest, scope: Scope, snapshot_day: dt.date | None = None
                 ) -> str:
    """(group, rows, key hash sum, row hash sum) of MySQL's rows: per day of the whole table
    (`scope.day` None), or per key-hash bucket of one day. A snapshot is read as one day: its
    latest snapshot's, `snapshot_day`."""
    day = scope.day or snapshot_day
    read = partition_read(spec, day, day)
    return digest_sql("mysql", digest, scope, source=read.source, where=read.where, day=read.day,
                      ref={c.name: c.source for c in digest.columns})


def rows_query(spec: ReplicatedTable, digest: RowDigest, scope: Scope) -> str:
    """MySQL's rows of one day's key-hash buckets, with their canonical fields (narrowing)."""
    read = partition_read(spec, scope.day, scope.day)
    return rows_sql("mysql", digest, scope, source=read.source, where=read.where,
                    ref={c.name: c.source for c in digest.columns})
