"""The replication's health, table by table: what `plex-etl status` prints and the Dagster asset
`plex_etl/replication_status` shows (defs/status.py gathers the facts from the Dagster instance).

For every replicated table: its strategy and tier, its last load (when, its rows), its freshness
against its tier (the same windows as its freshness policy), the last whole-table reconciliation
(`warehouse_equals_mysql`), its failing checks, when its tier next refreshes it, and, for a table
kept current by change capture, the capture's lag. A table's state is FAIL when it is older than
its fail window, was never loaded or has a failing check of severity ERROR; WARN when it is older
than its warn window or has a failing warning; OK otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

RECONCILE_CHECK = "warehouse_equals_mysql"  # the whole-table reconciliation check (defs/checks.py)
STATES = ("FAIL", "WARN", "OK")  # worst first
_WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass(frozen=True)
class StatusTable:
    """What is known of a replicated table before looking at what happened to it."""

    source: str
    table: str
    asset_key: str  # as the UI spells it: plex/factcabecera
    strategy: str
    tier: str
    captured: bool  # kept current by change capture (no tier refresh)
    warn_after: dt.timedelta | None  # its freshness policy's windows
    fail_after: dt.timedelta | None
    cron: str | None  # its tier's refresh (None for a captured table)
    time_zone: str
    checks: tuple[str, ...]  # the names of its checks


@dataclass(frozen=True)
class LastLoad:
    at: dt.datetime  # UTC
    rows: int | None  # rows of that load (all its days)
    days: str | None  # the days it loaded, as its metadata says
    lag_seconds: float | None = None  # change capture: commit in MySQL to commit in the warehouse


@dataclass(frozen=True)
class CheckOutcome:
    """The latest evaluation of one asset check."""

    passed: bool
    severity: str  # "ERROR" or "WARN"
    description: str
    metadata: Mapping[str, Any]
    at: dt.datetime  # UTC


@dataclass(frozen=True)
class TableStatus:
    table: StatusTable
    state: str  # FAIL, WARN, OK
    last_load: LastLoad | None
    freshness: str  # OK, WARN, FAIL, never loaded
    reconciliation: str
    failing_checks: tuple[str, ...]  # "name (SEVERITY)"
    next_refresh: dt.datetime | None  # None: kept current by change capture
    reasons: tuple[str, ...]  # why the state is not OK
    as_of: dt.datetime

    @property
    def name(self) -> str:
        return f"{self.table.source}.{self.table.table}"


def next_tick(cron: str, time_zone: str, now: dt.datetime) -> dt.datetime:
    """The next time after `now` that a tier's cron fires, in its time zone. Tier crons are
    `minute hour-or-*/n * * weekday-or-*` (catalog/plan.py TIERS)."""
    minute, hour, day, month, weekday = cron.split()
    if day != "*" or month != "*":
        raise ValueError(f"cron {cron!r}: only minute, hour and weekday are supported")
    hours = range(0, 24, int(hour[2:])) if hour.startswith("*/") else range(24) if hour == "*" else [int(hour)]
    zone = ZoneInfo(time_zone)
    local = now.astimezone(zone)
    for offset in range(8):
        date = local.date() + dt.timedelta(days=offset)
        if weekday != "*" and (date.isoweekday() % 7) != int(weekday) % 7:
            continue
        for h in hours:
            tick = dt.datetime(date.year, date.month, date.day, h, int(minute), tzinfo=zone)
            if tick > local:
                return tick.astimezone(dt.UTC)
    raise ValueError(f"cron {cron!r} does not fire within a week")


def freshness(table: StatusTable, last_load: LastLoad | None, now: dt.datetime) -> str:
    if last_load is None:
        return "never loaded"
    age = now - last_load.at
    if table.fail_after is not None and age > table.fail_after:
        return "FAIL"
    if table.warn_after is not None and age > table.warn_after:
        return "WARN"
    return "OK"


def reconciliation(outcome: CheckOutcome | None) -> str:
    """The last whole-table comparison with MySQL in a few words."""
    if outcome is None:
        return "not run yet"
    if outcome.passed:
        return "equal"
    days = outcome.metadata.get("days_differing")
    if days is None:  # it could not compare: say why
        return f"failed: {outcome.description.splitlines()[0][:60] if outcome.description else 'no reason given'}"
    what = f"{days} day{'s' if days != 1 else ''} differ{'s' if days == 1 else ''}"
    return what + (" (lookback)" if outcome.severity == "WARN" else "")


def table_status(table: StatusTable, last_load: LastLoad | None, checks: Mapping[str, CheckOutcome],
                 now: dt.datetime) -> TableStatus:
    fresh = freshness(table, last_load, now)
    failing = sorted((name, o.severity) for name, o in checks.items() if not o.passed and name in table.checks)
    reasons = []
    if fresh in ("FAIL", "never loaded"):
        reasons.append("never loaded" if last_load is None else
                       f"last load {ago(last_load.at, now)} ago, over {hours(table.fail_after)}")
    elif fresh == "WARN":
        reasons.append(f"last load {ago(last_load.at, now)} ago, over {hours(table.warn_after)}")
    reasons += [f"{name} failed ({severity}, {ago(checks[name].at, now)} ago)" + _first_line(checks[name].description)
                for name, severity in failing]
    errors = fresh in ("FAIL", "never loaded") or any(severity == "ERROR" for _, severity in failing)
    state = "FAIL" if errors else "WARN" if reasons else "OK"
    return TableStatus(
        table=table,
        state=state,
        last_load=last_load,
        freshness=fresh,
        reconciliation=reconciliation(checks.get(RECONCILE_CHECK)),
        failing_checks=tuple(f"{name} ({severity})" for name, severity in failing if name != RECONCILE_CHECK),
        next_refresh=None if table.cron is None else next_tick(table.cron, table.time_zone, now),
        reasons=tuple(reasons),
        as_of=now,
    )


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f": {line[:117]}..." if len(line) > 120 else f": {line}" if line else ""


def ordered(statuses: Iterable[TableStatus]) -> list[TableStatus]:
    """Worst first, then by source and table."""
    return sorted(statuses, key=lambda s: (STATES.index(s.state), s.table.source, s.table.table))


def ago(when: dt.datetime, now: dt.datetime) -> str:
    """'3 min', '5h 12m', '2 days'."""
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400} days"


def hours(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "-"
    total = int(delta.total_seconds())
    if total % 86400 == 0 and total >= 2 * 86400:
        return f"{total // 86400} days"
    return f"{total // 3600}h" if total % 3600 == 0 else f"{total // 60} min"


def local_time(when: dt.datetime, time_zone: str) -> str:
    """Month, day and time in the source's time zone, short enough for a column: 'Dec 04 15:00'."""
    return when.astimezone(ZoneInfo(time_zone)).strftime("%b %d %H:%M")


def columns(status: TableStatus) -> dict[str, Any]:
    """One table's row, short cells: what the CLI prints and the UI's table shows (times in the
    source's time zone; the reasons say more)."""
    table, load = status.table, status.last_load
    fresh = status.freshness
    if load is not None and fresh != "OK":
        fresh = f"{fresh}: {ago(load.at, status.as_of)}"
    return {
        "table": status.name,
        "state": status.state,
        "freshness": fresh,
        "last_load": "never" if load is None else local_time(load.at, table.time_zone),
        "rows": None if load is None else load.rows,
        "reconciliation": status.reconciliation,
        "failing_checks": ", ".join(status.failing_checks),
        "next_refresh": "captured" if status.next_refresh is None else local_time(status.next_refresh,
                                                                                   table.time_zone),
        "strategy": table.strategy,
        "tier": table.tier,
        "capture_lag_seconds": None if load is None or load.lag_seconds is None else round(load.lag_seconds, 1),
    }


HEADERS = {  # the columns, most telling first
    "table": "TABLE", "state": "STATE", "freshness": "FRESHNESS", "last_load": "LAST LOAD", "rows": "ROWS",
    "reconciliation": "RECONCILIATION", "failing_checks": "FAILING CHECKS", "next_refresh": "NEXT REFRESH",
    "strategy": "STRATEGY", "tier": "TIER", "capture_lag_seconds": "LAG (S)",
}


def counts(statuses: Sequence[TableStatus]) -> dict[str, int]:
    return {state: sum(1 for s in statuses if s.state == state) for state in STATES}


def summary(statuses: Sequence[TableStatus]) -> str:
    n = counts(statuses)
    zones = sorted({s.table.time_zone for s in statuses})
    return (f"{len(statuses)} tables: {n['OK']} OK, {n['WARN']} WARN, {n['FAIL']} FAIL"
            + (f" (times in {', '.join(zones)})" if zones else ""))


def text_report(statuses: Sequence[TableStatus]) -> str:
    """The table `plex-etl status` prints, worst first, then why each table is not OK."""
    rows = [columns(s) for s in ordered(statuses)]
    cells = [[HEADERS[c] for c in HEADERS]] + [
        ["" if row[c] is None else f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in HEADERS]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    numeric = {list(HEADERS).index(c) for c in ("rows", "capture_lag_seconds")}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in cells]
    problems = [f"  {s.name}: {'; '.join(s.reasons)}" for s in ordered(statuses) if s.reasons]
    return "\n".join([*lines, "", summary(statuses), *problems]) + "\n"
