"""When a child row without its parent in the warehouse is a problem.

A child row whose parent row is not in the warehouse (an orphan *candidate*) is an **orphan**
only when the warehouse should hold that parent by now:

- MySQL has the parent row. A key MySQL lacks too is the source's own orphan (an inferred
  relationship, checks switched off): the warehouse holds what MySQL holds. Counted, not a failure.
- The parent's day has been loaded since the child row landed. Each row has one day (its date, or
  its parent's for a child table, see docs/design-notes.md); a parent whose day was not loaded
  since waits for that load: the older days of a newly replicated table (the demo's first 7-day
  load leaves the clientes of older days out), a parent on a slower tier than its child, a
  backfill of the child before its parent. Counted, not a failure. A snapshot parent's "day" is
  its latest snapshot.

So the check fails for what replication lost or never brought although it read it: a parent
deleted from the warehouse, a load that skipped rows, a parent that moved to a day that was
loaded without it. Candidates are classified by looking their parent keys up in MySQL (index
lookups on the referenced columns), the most recently landed first, at most `MAX_KEYS` keys;
the rest are counted as not classified.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_KEYS = 10_000  # parent keys looked up in MySQL per check
LOOKUP_BATCH = 500  # keys per MySQL statement
EXAMPLES = 5


@dataclass(frozen=True)
class Candidate:
    """The child rows that share a parent key missing from the warehouse."""

    key: tuple[Any, ...]
    rows: int
    landed: dt.datetime  # when the first of them landed in the warehouse (UTC)


@dataclass
class OrphanJudgement:
    child: str
    parent: str
    columns: tuple[str, ...]  # the child's columns holding the parent key
    total_rows: int  # child rows without their parent row in the warehouse
    orphans: list[tuple[Candidate, str]] = field(default_factory=list)  # with the parent's partition
    waiting: list[tuple[Candidate, str]] = field(default_factory=list)
    missing_in_mysql: list[Candidate] = field(default_factory=list)

    @property
    def orphan_rows(self) -> int:
        return sum(c.rows for c, _ in self.orphans)

    @property
    def waiting_rows(self) -> int:
        return sum(c.rows for c, _ in self.waiting)

    @property
    def missing_rows(self) -> int:
        return sum(c.rows for c in self.missing_in_mysql)

    @property
    def unclassified_rows(self) -> int:
        return self.total_rows - self.orphan_rows - self.waiting_rows - self.missing_rows

    def key_text(self, candidate: Candidate, partition: str | None = None) -> str:
        text = ", ".join(f"{c}={v}" for c, v in zip(self.columns, candidate.key, strict=True))
        return f"{text} ({_partition_text(partition)})" if partition is not None else text

    def examples(self) -> str:
        """A few orphans, else a few of the rows waiting for their parent."""
        if self.orphans:
            return "; ".join(self.key_text(c, p) for c, p in self.orphans[:EXAMPLES])
        return "; ".join(self.key_text(c, p) for c, p in self.waiting[:EXAMPLES])

    def waiting_partitions(self) -> list[str]:
        return sorted({p for _, p in self.waiting})

    def describe(self) -> str:
        parts = []
        if self.orphans:
            parts.append(
                f"{self.orphan_rows:,} {self.child} rows without their {self.parent} row although MySQL has it "
                f"and its day was loaded since they landed, e.g. "
                + "; ".join(self.key_text(c, p) for c, p in self.orphans[:EXAMPLES])
            )
        else:
            parts.append(f"no {self.child} row lacks a {self.parent} row the warehouse should hold")
        if self.waiting:
            days = self.waiting_partitions()
            shown = ", ".join(_partition_text(p) for p in days[:EXAMPLES]) + (", ..." if len(days) > EXAMPLES else "")
            parts.append(
                f"{self.waiting_rows:,} wait for their {self.parent} row, whose day was not loaded since "
                f"they landed ({len(days)} days: {shown})"
            )
        if self.missing_in_mysql:
            parts.append(
                f"{self.missing_rows:,} reference a {self.parent} row MySQL lacks too (as in MySQL), e.g. "
                + "; ".join(self.key_text(c) for c in self.missing_in_mysql[:EXAMPLES])
            )
        if self.unclassified_rows:
            parts.append(f"{self.unclassified_rows:,} not classified (more than {MAX_KEYS:,} parent keys missing)")
        return "; ".join(parts)


def _partition_text(partition: str | None) -> str:
    return "its latest snapshot" if partition == "" else f"day {partition}"


def judge(
    child: str,
    parent: str,
    columns: tuple[str, ...],
    total_rows: int,
    candidates: Sequence[Candidate],
    parent_partitions: Mapping[tuple[Any, ...], str],
    loaded_at: Callable[[str], dt.datetime | None],
) -> OrphanJudgement:
    """Classifies the candidates. `parent_partitions`: the partition that holds each parent key
    MySQL has ("" for a snapshot parent: its latest snapshot); `loaded_at`: when a partition of
    the parent was last loaded (None: never)."""
    judgement = OrphanJudgement(child, parent, columns, total_rows)
    for candidate in candidates:
        partition = parent_partitions.get(normalized(candidate.key))
        if partition is None:
            judgement.missing_in_mysql.append(candidate)
            continue
        loaded = loaded_at(partition)
        if loaded is not None and loaded > candidate.landed:
            judgement.orphans.append((candidate, partition))
        else:
            judgement.waiting.append((candidate, partition))
    return judgement


def normalized(key: Sequence[Any]) -> tuple[Any, ...]:
    """A key as both MySQL's driver and the warehouse's Arrow values spell it."""
    return tuple(v if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in key)


def partition_of(day: dt.date | None, first_partition: dt.date, today: dt.date) -> str:
    """The daily partition that holds rows of `day`: the first one holds every older day, today's
    every later one; None (a snapshot) is its latest snapshot, ""."""
    if day is None:
        return ""
    return min(max(day, first_partition), today).isoformat()


def parent_partitions(
    fetch: Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]],
    sql_for: Callable[[int], str],
    keys: Sequence[tuple[Any, ...]],
    first_partition: dt.date,
    today: dt.date,
) -> dict[tuple[Any, ...], str]:
    """The partition of each parent key MySQL has, by batches of LOOKUP_BATCH keys. `sql_for(n)`
    is the statement for n keys (extract.sql.rows_by_key_query), `fetch(sql, params)` runs it:
    rows of the key's values then the row's day."""
    found: dict[tuple[Any, ...], str] = {}
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start:start + LOOKUP_BATCH]
        params = {f"k{i}_{j}": value for i, key in enumerate(batch) for j, value in enumerate(key)}
        for row in fetch(sql_for(len(batch)), params):
            *key, day = row
            if isinstance(day, dt.datetime):
                day = day.date()
            found[normalized(key)] = partition_of(day, first_partition, today)
    return found
