"""How a partition read reaches its rows in MySQL, and reads bounded by keys (issue 12).

Most of Plex's partition dates have no index, so a one-day read of a dated table (and,
through the join, of each of its children) scans the whole dated table. Where the dated
table's primary key is an integer that grows with time (auto-increment invoice and
journal ids), the read is bounded by a key range instead:

1. **The key follows the date, verified from the data** (`key_order`): SAMPLE_POINTS points
   evenly spread over [MIN(key), MAX(key)], SAMPLE_ROWS consecutive rows at each, every
   point one clustered-index lookup, plus the SAMPLE_TAIL newest keys (a row entered late
   with an old date sits there while it is new). Walking the sampled rows in key order, the largest
   step back in days (a row dated before an earlier key's row) is the disorder: it becomes
   the margin the key range is widened by. More than MAX_DISORDER_DAYS, or mostly undated
   samples: no key bounds (the read stays today's query, and the reason is reported).
2. **The key range** (`find_key`): a binary search on the key, each probe one index lookup
   (the first row at or after a key value), for the first key of day `start - margin` and
   the first key of day `end + 1 + margin`. With the date condition kept, a row of the
   window is only left out if its key is out of date order by more than the margin.
3. **Children** are bounded on the column that references the dated table's key
   (`sql.key_columns`), so MySQL reads them through their foreign-key index.

Both steps run inside the read's consistent snapshot (`choose_access`), on the same
connection as the counts and the rows, so the counts and the rows select the same rows.
The first partition (it also holds the undated rows, which can be anywhere in the key
order) and windows that include it are read without key bounds. Rows dated further out
of key order than the sample showed are found by the whole-table reconciliation, and
`plex-etl reconcile --repair` reloads without key bounds (PLEX_ETL_KEY_BOUNDS=off).

Key bounds are opt-in (`key_bounds: true` in the plan's defaults or on a table): a row dated
further out of key order than the sample showed (a back-dated row entered late and read
by a closed window, or an old row whose date was moved forward) would be left out of the
read while its day's row count still agrees with the bounded count. With them off (the
default), every read is exact and the row-count check compares with the true day count.

`explain_partition` reports the access path of a one-day read from MySQL's EXPLAIN, with
the CREATE INDEX a DBA could apply for each full scan (`plex-etl explain`, and the
section `plex-etl discover` writes into docs/catalog/<source>.md).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plex_etl.catalog.model import Table
from plex_etl.catalog.relationships import quote
from plex_etl.extract.spec import INTEGER_TYPES, ReplicatedTable
from plex_etl.extract.sql import KeyRange, PartitionQuery, key_columns, partition_query
from plex_etl.mysql import Run, runner

KEY_BOUNDS_ENV = "PLEX_ETL_KEY_BOUNDS"  # "off" reads every partition with today's query
SAMPLE_POINTS = 32
SAMPLE_ROWS = 8
SAMPLE_TAIL = 256  # the newest keys: where rows entered late (back-dated) are while they are new
MAX_DISORDER_DAYS = 7



def key_bounds_enabled(spec: ReplicatedTable) -> bool:
    """The plan's choice (`key_bounds`, default off), unless PLEX_ETL_KEY_BOUNDS forces on/off."""
    forced = os.environ.get(KEY_BOUNDS_ENV, "").strip().lower()
    if forced:
        return forced not in ("off", "0", "false", "no")
    return spec.key_bounds


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _day(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(_text(value)[:10])


def dated_table(spec: ReplicatedTable) -> Table:
    """The table whose date columns decide the day: the table itself, or a child's ancestor."""
    return spec.hops[-1].table if spec.hops else spec.table


def indexed_date(spec: ReplicatedTable) -> bool:
    """Every partition column of the dated table leads an index: MySQL can range-scan the day."""
    leading = {i.columns[0] for i in dated_table(spec).indexes if i.columns}
    return all(c in leading for c in spec.dated.partition_columns)


def _day_sql(spec: ReplicatedTable) -> str:
    refs = [f"t.{quote(c)}" for c in spec.dated.partition_columns]
    expr = refs[0] if len(refs) == 1 else "COALESCE(" + ", ".join(refs) + ")"
    return f"DATE({expr})"


def key_candidate(spec: ReplicatedTable) -> str | None:
    """The dated table's key column when key bounds can apply, else None (see why_not_keyed)."""
    return None if why_not_keyed(spec) else dated_table(spec).primary_key[0]


def why_not_keyed(spec: ReplicatedTable) -> str | None:
    """Why this table is never read by key range (None: it can be, if its key follows its date)."""
    if spec.plan.strategy == "snapshot":
        return "snapshot: reads the whole table by design"
    if spec.dated.strategy == "upsert":
        return "upsert: a row moves to the day of its modification, whatever its key"
    root = dated_table(spec)
    if indexed_date(spec):
        return f"the date of {root.name} has an index"
    if len(root.primary_key) != 1:
        return f"{root.name} has no single-column primary key"
    if root.column(root.primary_key[0]).data_type.lower() not in INTEGER_TYPES:
        return f"the primary key of {root.name} is not an integer"
    if not key_columns(spec):
        return f"{spec.name} does not hold the key of {root.name}"
    return None


@dataclass(frozen=True)
class KeyOrder:
    """Whether the dated table's key follows its date, from a sample of index lookups."""

    table: str
    key: str
    follows: bool
    reason: str
    disorder_days: int = 0  # the largest step back in days between sampled rows in key order
    sampled: int = 0
    key_min: int | None = None
    key_max: int | None = None


def key_order(run: Run, spec: ReplicatedTable) -> KeyOrder:
    """Sample the dated table along its key (every point one index lookup) and measure how far
    the dates step back in key order."""
    root = dated_table(spec)
    key = root.primary_key[0]
    q = quote(key)
    table = quote(root.name)
    ((low, high),) = run(f"SELECT MIN({q}), MAX({q}) FROM {table}")
    if low is None:
        return KeyOrder(root.name, key, False, f"{root.name} is empty")
    low, high = int(_text(low)), int(_text(high))
    points = sorted({low + (high - low) * i // max(1, SAMPLE_POINTS - 1) for i in range(SAMPLE_POINTS)})
    rows: dict[int, dt.date | None] = {}
    for point in points:
        sql = (f"SELECT t.{q}, {_day_sql(spec)} FROM {table} t WHERE t.{q} >= {point} "
               f"ORDER BY t.{q} LIMIT {SAMPLE_ROWS}")
        rows.update((int(_text(k)), _day(d)) for k, d in run(sql))
    tail = f"SELECT t.{q}, {_day_sql(spec)} FROM {table} t ORDER BY t.{q} DESC LIMIT {SAMPLE_TAIL}"
    rows.update((int(_text(k)), _day(d)) for k, d in run(tail))
    days = [d for _, d in sorted(rows.items())]
    dated = [d for d in days if d is not None]
    if len(dated) * 2 < len(days):
        return KeyOrder(root.name, key, False, f"most sampled rows of {root.name} have no date",
                        sampled=len(days), key_min=low, key_max=high)
    disorder = 0
    latest: dt.date | None = None
    for day in dated:
        if latest is not None:
            disorder = max(disorder, (latest - day).days)
        latest = day if latest is None else max(latest, day)
    if disorder > MAX_DISORDER_DAYS:
        return KeyOrder(root.name, key, False,
                        f"{root.name}.{key} does not follow the date: sampled rows step back "
                        f"{disorder} days in key order (more than {MAX_DISORDER_DAYS})",
                        disorder, len(days), low, high)
    return KeyOrder(root.name, key, True,
                    f"{root.name}.{key} follows the date within {disorder} day(s) ({len(days)} sampled rows)",
                    disorder, len(days), low, high)


def find_key(run: Run, spec: ReplicatedTable, order: KeyOrder, day: dt.date, nulls_after: bool) -> int | None:
    """The smallest key value whose first row (at or after it) is dated `day` or later, by
    binary search, each probe one index lookup; None when that is the table's first key.
    `nulls_after`: whether an undated probe counts as "day or later" (the lower bound says
    yes and the upper bound no, so that undated rows near a boundary stay inside the range).
    Returns `key_max + 1` when no row is dated `day` or later."""
    assert order.key_min is not None and order.key_max is not None
    q = quote(order.key)
    table = quote(order.table)
    day_sql = _day_sql(spec)

    def after(value: int) -> bool:
        found = run(f"SELECT {day_sql} FROM {table} t WHERE t.{q} >= {value} ORDER BY t.{q} LIMIT 1")
        if not found:
            return True
        probed = _day(found[0][0])
        return nulls_after if probed is None else probed >= day

    low, high = order.key_min, order.key_max + 1  # after(high) holds: past the last row
    while low < high:
        middle = (low + high) // 2
        if after(middle):
            high = middle
        else:
            low = middle + 1
    return None if low == order.key_min else low


@dataclass(frozen=True)
class Access:
    """How one read reaches its rows: a key range, or today's query and why."""

    keys: KeyRange | None
    reason: str
    order: KeyOrder | None = None


def choose_access(run: Run, spec: ReplicatedTable, start: dt.date | None, end: dt.date | None) -> Access:
    """The key range of a read of [start, end] (None: open side), found by index lookups in
    the caller's snapshot, or no key range and why."""
    if not key_bounds_enabled(spec):
        return Access(None, f"key bounds off (plan key_bounds, or {KEY_BOUNDS_ENV})")
    why = why_not_keyed(spec)
    if why:
        return Access(None, why)
    if start is None or start <= spec.first_day:
        return Access(None, "the first partition holds the undated rows: read whole")
    order = key_order(run, spec)
    if not order.follows:
        return Access(None, order.reason, order)
    margin = dt.timedelta(days=order.disorder_days)
    lo = find_key(run, spec, order, start - margin, nulls_after=True)
    hi = None
    if end is not None:
        hi = find_key(run, spec, order, end + dt.timedelta(days=1) + margin, nulls_after=False)
        hi = None if hi is not None and hi > order.key_max else hi
    if lo is None and hi is None:
        return Access(None, f"{order.reason}; the window spans every key", order)
    return Access(KeyRange(order.key, lo, hi, order.disorder_days), order.reason, order)


def bounded_query(
    run: Run, spec: ReplicatedTable, start: dt.date | None, end: dt.date | None
) -> tuple[PartitionQuery, Access]:
    """(the partition query to run, how it was chosen): key-bounded when `choose_access` finds
    a range, else today's query."""
    access = choose_access(run, spec, start, end)
    return partition_query(spec, start, end, access.keys), access


@dataclass(frozen=True)
class ExplainStep:
    """One row of MySQL's EXPLAIN: how one table of the read is reached."""

    table: str  # the MySQL table (not the query's alias)
    type: str  # ALL (full scan), index (full index scan), range, ref, eq_ref, const, ...
    key: str | None
    rows: int

    @property
    def full_scan(self) -> bool:
        return self.type in ("ALL", "index")

    def describe(self) -> str:
        how = "full scan" if self.type == "ALL" else (
            f"full index scan ({self.key})" if self.type == "index" else f"{self.type} on {self.key}")
        return f"{self.table}: {how}, ~{self.rows:,} rows"


def explain(run: Run, spec: ReplicatedTable, sql: str) -> list[ExplainStep]:
    """MySQL's EXPLAIN of a partition read, aliases mapped back to table names."""
    aliases = {"t": spec.table.name, **{f"p{i}": h.table.name for i, h in enumerate(spec.hops, start=1)}}
    steps = []
    for row in run(f"EXPLAIN {sql}"):
        _, _, alias, kind, _, key, _, _, rows, *_ = (None if v is None else _text(v) for v in row)
        steps.append(ExplainStep(aliases.get(alias or "", alias or "?"), kind or "?", key, int(rows or 0)))
    return steps


def examined_estimate(steps: Sequence[ExplainStep]) -> int:
    """Rows MySQL expects to examine in a nested-loop join: each table's rows per row of the
    tables before it."""
    total, loops = 0, 1
    for step in steps:
        loops *= max(1, step.rows)
        total += loops
    return total


@dataclass(frozen=True)
class AccessReport:
    """The access path of one table's one-day partition read."""

    table: str
    strategy: str
    day: dt.date
    keyed: bool  # read through a primary-key range found by index lookups
    reason: str
    steps: tuple[ExplainStep, ...]  # the read that runs
    today_steps: tuple[ExplainStep, ...]  # the read without key bounds
    index_statement: str  # what a DBA could apply so that the date itself is indexed ("" if none)

    @property
    def examined(self) -> int:
        return examined_estimate(self.steps)

    @property
    def today_examined(self) -> int:
        return examined_estimate(self.today_steps)

    @property
    def full_scans(self) -> list[str]:
        return [s.table for s in self.steps if s.full_scan]

    @property
    def today_full_scans(self) -> list[str]:
        return [s.table for s in self.today_steps if s.full_scan]

    @property
    def path(self) -> str:
        if self.strategy == "snapshot":
            return "whole table (snapshot)"
        if self.full_scans:
            return "full scan of " + ", ".join(dict.fromkeys(self.full_scans))
        return ("key range" if self.keyed else "index") + ": " + "; ".join(s.describe() for s in self.steps)


def index_statement(spec: ReplicatedTable, full_scans: Sequence[str]) -> str:
    """CREATE INDEX statements for a read that scans `full_scans`: the dated table's partition
    columns without an index (one index each: the read's OR of per-column branches can use
    each; with them MySQL starts a child's read from the day's parents), and a scanned
    child's foreign-key columns when no index leads with them."""
    if not full_scans:
        return ""
    root = dated_table(spec)
    leading = {i.columns[0] for i in root.indexes if i.columns}
    wanted = [(root.name, (c,)) for c in spec.dated.partition_columns if c not in leading]
    tables = {spec.table.name: spec.table, **{h.table.name: h.table for h in spec.hops}}
    for name in dict.fromkeys(full_scans):
        hop = next((h for h in spec.hops if h.relationship.table == name), None)
        if name in tables and hop is not None:
            width = len(hop.relationship.columns)
            if hop.relationship.columns not in {i.columns[:width] for i in tables[name].indexes}:
                wanted.append((name, hop.relationship.columns))
    statements = []
    for name, cols in wanted:
        index = f"ix_{name}_{'_'.join(cols)}".lower()[:64]
        statements.append(f"CREATE INDEX {quote(index)} ON {quote(name)} ({', '.join(quote(c) for c in cols)});")
    return " ".join(statements)


def explain_partition(run: Run, spec: ReplicatedTable, day: dt.date) -> AccessReport:
    """The access path of the read of partition `day`, as it would run now: the key range is
    found as the stream finds it (index lookups), then both reads are EXPLAINed."""
    if spec.plan.strategy == "snapshot":
        sql = partition_query(spec, day, day).rows_sql
        steps = tuple(explain(run, spec, sql))
        return AccessReport(spec.name, "snapshot", day, False, "snapshot: reads the whole table by design",
                            steps, steps, "")
    query, access = bounded_query(run, spec, day, day)
    today = tuple(explain(run, spec, partition_query(spec, day, day).rows_sql))
    steps = tuple(explain(run, spec, query.rows_sql)) if access.keys is not None else today
    return AccessReport(spec.name, spec.plan.strategy, day, access.keys is not None, access.reason, steps, today,
                        index_statement(spec, [s.table for s in today if s.full_scan]))


def access_reports(
    connection: Any, catalog: Any, plan: Any, day: dt.date, tables: Sequence[str] = ()
) -> list[AccessReport]:
    """The access path of the one-day read of `day` for every replicated table of a source (or
    only `tables`)."""
    from plex_etl.extract.spec import replicated_table

    run = runner(connection)
    return [explain_partition(run, replicated_table(catalog, plan, p.table), day)
            for p in sorted(plan.included, key=lambda p: p.table) if not tables or p.table in tables]


def access_markdown(reports: Sequence[AccessReport], day: dt.date) -> str:
    """The "Access paths" section of docs/catalog/<source>.md (and `plex-etl explain`)."""
    keyed = [r for r in reports if r.keyed]
    scans = [r for r in reports if r.strategy != "snapshot" and r.full_scans]
    lines = [
        "## Access paths",
        "",
        f"How MySQL reaches the rows of a one-day partition ({day}), from its EXPLAIN "
        "(`plex-etl explain`). Rows examined are MySQL's estimates for that day. A key range is a "
        "primary-key range of the dated table found by index lookups, used where the date has no "
        "index and the key follows the date (verified on a sample of the key at every read; see "
        "plex_etl/extract/access.py).",
        "",
        f"{len(keyed)} dated tables read by key range, {len(scans)} by a full scan; snapshots read "
        "the whole table by design.",
        "",
        "| table | strategy | access path | rows examined per day | without key range | why |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in reports:
        before = f"{r.today_examined:,}" if r.keyed else ""
        lines.append(f"| {r.table} | {r.strategy} | {r.path.replace('|', '/')} | {r.examined:,} | {before} | "
                     f"{r.reason.replace('|', '/')} |")
    statements = [r for r in reports if r.index_statement and r.strategy != "snapshot"]
    if statements:
        lines += ["", "Indexes a DBA could add so that these reads use an index without a key range "
                  "(today's query scans the tables named):", "", "```sql"]
        users: dict[str, list[str]] = {}  # statement -> the tables whose read it serves
        for r in statements:
            for statement in (x.strip() + ";" for x in r.index_statement.split(";") if x.strip()):
                users.setdefault(statement, []).append(r.table)
        for statement, tables in users.items():
            lines += [f"-- {', '.join(tables)}", statement]
        lines.append("```")
    return "\n".join(lines) + "\n"
