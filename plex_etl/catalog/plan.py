"""The hand-owned load plan of a source: which tables, how each is partitioned, how often.

`<source>.plan.yaml` in the config directory. `plex-etl discover` appends proposed entries
for tables the plan does not mention yet (marked `proposed: true`: they do not load until a
reviewer deletes that line) and never rewrites what is there, so comments and decisions
survive. Strategies (see DESIGN.md):

- `event`: the partition for day D holds rows whose date expression falls on D; the
  expression is one column or the COALESCE of `date_columns`, in order;
- `child`: rows whose parent, reached through the relationship `parent` (and its own
  parent, when the parent is itself a child), is in D;
- `upsert`: rows created or modified on D (`COALESCE(modified_column, created_column)`),
  merged by primary key;
- `snapshot`: the whole table as read when materialized, landed as today's snapshot (an unpartitioned asset).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from plex_etl.catalog.model import Catalog, Column, Table
from plex_etl.catalog.profile import DATE_TYPES, DateProfile
from plex_etl.typemap import TypeMappingError, map_column
from plex_etl.yamlio import YamlFileError, load_file, safe_load, yaml_error_message

STRATEGIES = ("event", "child", "upsert", "snapshot")
# How changes reach the warehouse: `poll` (the tier's reloads of recent days) or `binlog`
# (change capture from MySQL's row-based binary log, plex_etl.cdc; needs a primary key).
CAPTURES = ("poll", "binlog")
# How often each tier is refreshed (cron, in the source's time zone): the old system's tiers.
TIERS: dict[str, str] = {
    "critical": "0 */4 * * *",
    "high": "0 */6 * * *",
    "standard": "0 */8 * * *",
    "app_orders": "0 */2 * * *",
    "master_daily": "0 6 * * *",
    "master_weekly": "0 3 * * 0",
}


class PlanError(ValueError):
    """The plan file contradicts itself or the catalog; the message names table and field."""


@dataclass(frozen=True)
class TablePlan:
    table: str
    include: bool = True
    strategy: str = "snapshot"
    date_columns: tuple[str, ...] = ()
    parent: str | None = None
    created_column: str | None = None
    modified_column: str | None = None
    tier: str = "master_daily"
    chunk_rows: int = 200_000
    lookback_days: int | None = None
    type_overrides: dict[str, str] = field(default_factory=dict)
    proposed: bool = False
    key_bounds: bool | None = None  # None: the source's default (defaults.key_bounds)
    note: str | None = None
    capture: str = "poll"

    @property
    def partition_columns(self) -> tuple[str, ...]:
        """The columns whose COALESCE decides a row's day (event and upsert)."""
        if self.strategy == "upsert":
            return tuple(c for c in (self.modified_column, self.created_column) if c)
        return self.date_columns


DEFAULT_WINDOW_DAYS = 31


@dataclass(frozen=True)
class SourcePlan:
    source: str
    tables: dict[str, TablePlan]
    lookback_days: int = 3
    weekly_catchup_days: int = 7
    gap_fill_days: int = 30  # missing or failed partitions this recent are loaded at every tick
    # Key-bounded partition reads (extract/access.py): a day's read examines about its own rows,
    # not the whole table. A row inserted later than the sampled disorder margin allows still
    # comes with the next read (its new key, see extract.sql.partition_query); an old row whose
    # date is edited is found and repaired by reconciliation. On unless a plan says otherwise.
    key_bounds: bool = True
    snapshot_retention_days: int = 90
    tier_lookback_days: dict[str, int] = field(default_factory=dict)
    # The history floor: the day the warehouse gives to undated rows and to rows dated before it.
    # Every later row keeps its own day in the warehouse, however old.
    first_day: dt.date = dt.date(2020, 1, 1)
    # Dagster's daily partitions cover at least the last `window_days` days (see first_partition).
    window_days: int = DEFAULT_WINDOW_DAYS
    # Reconciliation hashes every value of a table every day up to this many rows (catalog
    # estimate); a larger table's values rotate through its days (plex_etl/reconcile.py).
    value_check_rows: int = 20_000_000
    # Entries that could not be read (YAML error inside the entry, unknown keys, a value of the
    # wrong kind): table -> why, naming the file and line. They do not load; the others do.
    broken: dict[str, str] = field(default_factory=dict)

    @property
    def captured(self) -> list[str]:
        """The tables kept current from the binary log (`capture: binlog`, included and reviewed)."""
        return sorted(p.table for p in self.included if p.capture == "binlog")

    @property
    def included(self) -> list[TablePlan]:
        """The tables that load: included and reviewed (a `proposed: true` entry waits)."""
        return [p for p in self.tables.values() if p.include and not p.proposed]

    @property
    def pending_review(self) -> list[str]:
        """Tables whose proposed entry has not been reviewed yet: they do not load."""
        return sorted(p.table for p in self.tables.values() if p.include and p.proposed)

    def lookback_for(self, plan: TablePlan) -> int:
        if plan.lookback_days is not None:
            return plan.lookback_days
        return self.tier_lookback_days.get(plan.tier, self.lookback_days)

    def first_partition(self, today: dt.date) -> dt.date:
        """The first daily partition on `today`: the 1st of the month that holds the window's
        oldest day (never before `first_day`).

        It also holds the whole history: every row dated before it, and the undated ones, load
        with it, each keeping its own day in the warehouse. So the partitions an operator sees
        and Dagster records stay a rolling window of one to two months, whatever the age of the
        data (a 40-year-old database has as many as a new one), and the window moves a month
        at a time, not every day: a run planned by a code location loaded before the 1st still
        finds its first partition in a worker loaded after it, within the month."""
        oldest = today - dt.timedelta(days=self.window_days - 1)
        return max(self.first_day, oldest.replace(day=1))

    def automatic_windows(self) -> dict[str, int]:
        """Every window the automation reloads, by name: each must stay inside the daily window,
        or a tick would reload the first partition, and with it the whole history."""
        windows = {"lookback_days": self.lookback_days, "weekly_catchup_days": self.weekly_catchup_days,
                   "gap_fill_days": self.gap_fill_days}
        windows.update({f"tier_lookback_days.{tier}": days for tier, days in self.tier_lookback_days.items()})
        windows.update({f"tables.{p.table}.lookback_days": p.lookback_days
                        for p in self.tables.values() if p.lookback_days is not None})
        return windows


_TABLE_KEYS = {
    "include", "strategy", "date_columns", "parent", "created_column", "modified_column", "tier",
    "chunk_rows", "lookback_days", "type_overrides", "proposed", "note", "key_bounds", "capture",
}


def _table_plan(name: str, raw: dict[str, Any], where: str) -> TablePlan:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: table {name}: expected a mapping of settings, got {raw!r}")
    unknown = set(raw) - _TABLE_KEYS
    if unknown:
        raise PlanError(f"{where}: table {name}: unknown keys {sorted(unknown)}")
    dates = raw.get("date_columns") or ()
    try:
        return TablePlan(
            table=name,
            include=bool(raw.get("include", True)),
            strategy=str(raw.get("strategy", "snapshot")),
            date_columns=(dates,) if isinstance(dates, str) else tuple(dates),
            parent=raw.get("parent"),
            created_column=raw.get("created_column"),
            modified_column=raw.get("modified_column"),
            tier=str(raw.get("tier", "master_daily")),
            chunk_rows=int(raw.get("chunk_rows", 200_000)),
            lookback_days=None if raw.get("lookback_days") is None else int(raw["lookback_days"]),
            type_overrides=dict(raw.get("type_overrides") or {}),
            proposed=bool(raw.get("proposed", False)),
            key_bounds=None if raw.get("key_bounds") is None else bool(raw["key_bounds"]),
            note=raw.get("note"),
            capture=str(raw.get("capture", "poll")),
        )
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{where}: table {name}: {exc}") from None


_TABLES_LINE = re.compile(r"^tables\s*:")
_TOP_LEVEL = re.compile(r"^[^\s#]")


def _blank_except(lines: list[str], keep: range | set[int]) -> str:
    """The text with every line outside `keep` emptied: YAML errors keep the file's line numbers."""
    return "".join(line if i in keep else "\n" for i, line in enumerate(lines))


def _salvage(path: Path, text: str, error: YamlFileError) -> tuple[dict[str, Any], dict[str, str]]:
    """A plan file that is not valid YAML as a whole, read entry by entry: (the parsed plan
    with every table entry that is valid YAML on its own, {table: YAML error of its entry}).

    A mistake inside one table's entry (a missing bracket, a bad indentation) then isolates that
    table instead of the whole source. Anything else that does not parse (the defaults, the
    top-level structure, a line between entries) raises `error`'s message: the source cannot
    be read. Each entry is parsed with the file's other lines emptied, so the line numbers in
    the messages are the file's."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _TABLES_LINE.match(line)), None)
    if start is None:
        raise error
    end = next((i for i in range(start + 1, len(lines)) if _TOP_LEVEL.match(lines[i])), len(lines))
    entries = [i for i in range(start + 1, end) if _ENTRY.match(lines[i])]
    if not entries:
        raise error
    blocks = [range(a, b) for a, b in zip(entries, [*entries[1:], end], strict=True)]
    in_entries = {i for block in blocks for i in block}
    try:
        raw = safe_load(_blank_except(lines, set(range(len(lines))) - in_entries)) or {}
    except yaml.YAMLError as exc:
        raise YamlFileError(yaml_error_message(path, exc)) from None
    if not isinstance(raw, dict):
        raise error
    tables: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for block in blocks:
        try:
            parsed = safe_load(_blank_except(lines, {start, *block})) or {}
        except yaml.YAMLError as exc:
            name = _ENTRY.match(lines[block.start])["name"].strip().strip("'\"")  # type: ignore[index]
            broken[name] = f"{yaml_error_message(path, exc)} (in the entry of table {name}, line {block.start + 1})"
            continue
        tables.update(parsed.get("tables") or {})
    raw["tables"] = tables
    return raw, broken


def load_plan(path: Path, source: str) -> SourcePlan:
    """The plan file of `source`. An entry that cannot be read (not valid YAML on its own, unknown
    keys, a wrong value) is kept out of `tables` and named in `broken` (file and line): only that
    table is affected. PlanError or YamlFileError (file, line) when the file as a whole cannot be
    read: its defaults or its structure."""
    if not path.exists():
        return SourcePlan(source=source, tables={})
    broken: dict[str, str] = {}
    try:
        raw = load_file(path) or {}
    except YamlFileError as exc:
        raw, broken = _salvage(path, path.read_text(), exc)
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: expected `defaults:` and `tables:` mappings, got {type(raw).__name__}")
    defaults = raw.get("defaults") or {}
    entries = raw.get("tables") or {}
    if not isinstance(defaults, dict) or not isinstance(entries, dict):
        raise PlanError(f"{path}: `defaults:` and `tables:` must be mappings (name: settings)")
    tables = {}
    for name, body in entries.items():
        try:
            tables[str(name)] = _table_plan(str(name), body, str(path))
        except PlanError as exc:
            broken[str(name)] = str(exc)
    def default(key: str, parse: Any, fallback: Any) -> Any:
        value = defaults.get(key, fallback)
        try:
            return parse(value)
        except (TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"{path}: defaults.{key}: {value!r} is not valid ({exc})") from None

    return SourcePlan(
        source=source,
        tables=tables,
        lookback_days=default("lookback_days", int, 3),
        weekly_catchup_days=default("weekly_catchup_days", int, 7),
        gap_fill_days=default("gap_fill_days", int, 30),
        key_bounds=default("key_bounds", bool, True),
        snapshot_retention_days=default("snapshot_retention_days", int, 90),
        tier_lookback_days=default("tier_lookback_days", lambda v: {str(k): int(n) for k, n in (v or {}).items()}, {}),
        first_day=default("first_day", lambda v: dt.date.fromisoformat(str(v)), "2020-01-01"),
        window_days=default("window_days", int, DEFAULT_WINDOW_DAYS),
        value_check_rows=default("value_check_rows", int, 20_000_000),
        broken=broken,
    )


@dataclass(frozen=True)
class PlanProblems:
    """What keeps a plan from loading: problems of the whole source (its defaults), and of each
    table's entry (which only keep that table out)."""

    source: list[str]
    tables: dict[str, list[str]]

    def messages(self) -> list[str]:
        return [*self.source, *(m for problems in self.tables.values() for m in problems)]


def plan_problems(plan: SourcePlan, catalog: Catalog) -> PlanProblems:
    """Every inconsistency of the plan, in itself and against the catalog, by table."""
    source: list[str] = []
    tables: dict[str, list[str]] = {name: [why] for name, why in plan.broken.items()}

    def table_error(name: str, message: str) -> None:
        tables.setdefault(name, []).append(message)

    if plan.window_days < 2:
        source.append(f"{plan.source}.plan: defaults.window_days must be at least 2, not {plan.window_days}")
    for name, days in plan.automatic_windows().items():
        if days < 1 or days >= plan.window_days:
            message = (f"{plan.source}.plan: {name} is {days}: it must be between 1 and window_days - 1 "
                       f"({plan.window_days - 1}), or the automation would reload the first partition, "
                       "which holds the whole history")
            if name.startswith("tables."):
                table = name.removeprefix("tables.").removesuffix(".lookback_days")
                if plan.tables[table].include:  # an excluded table's window never runs
                    table_error(table, message)
            else:
                source.append(message)
    for p in plan.tables.values():
        where = f"{plan.source}.plan: table {p.table}"
        if p.table not in catalog.tables:
            if p.include:
                table_error(p.table, f"{where}: not in the catalog: renamed or dropped in MySQL? Rename the "
                                     "entry to the table's new name (after `plex-etl discover`), or set "
                                     "`include: false`")
            continue
        if not p.include:
            continue
        for message in _table_errors(plan, catalog, p, where):
            table_error(p.table, message)
    return PlanProblems(source, tables)


def validate(plan: SourcePlan, catalog: Catalog) -> None:
    """Raise PlanError listing every inconsistency between plan and catalog."""
    errors = plan_problems(plan, catalog).messages()
    if errors:
        raise PlanError("invalid plan:\n  " + "\n  ".join(errors))


def isolate(plan: SourcePlan, catalog: Catalog) -> tuple[SourcePlan, dict[str, str]]:
    """The plan without the tables that cannot load, and why each does not: its own entry's
    problems, or those of the table its days come from (a child table is read through its
    parent). PlanError when the source as a whole cannot load (its defaults)."""
    problems = plan_problems(plan, catalog)
    if problems.source:
        raise PlanError("invalid plan:\n  " + "\n  ".join(problems.source))
    out = {t: "; ".join(messages) for t, messages in problems.tables.items()}
    roots = dict(out)

    def chain(p: TablePlan) -> list[str]:
        """The tables its days come through, parent first, up to the first that does not load."""
        tables: list[str] = []
        while p.strategy == "child" and p.parent and len(tables) <= len(plan.tables):
            try:
                parent = catalog.relationship(p.parent).referenced_table
            except KeyError:
                break
            tables.append(parent)
            if parent in roots or parent not in plan.tables:
                break
            p = plan.tables[parent]
        return tables

    for p in plan.tables.values():
        if p.table in out or not p.include:
            continue
        through = chain(p)
        if through and through[-1] in roots:
            root = through[-1]
            via = f" (through {', '.join(through[:-1])})" if len(through) > 1 else ""
            out[p.table] = (f"{plan.source}.plan: table {p.table}: its days come from table {root}{via}, "
                            f"which does not load: {roots[root]}")
    tables = {name: p for name, p in plan.tables.items() if name not in out}
    return replace(plan, tables=tables, broken={}), out


def _table_errors(plan: SourcePlan, catalog: Catalog, p: TablePlan, where: str) -> list[str]:
    """The problems of one included entry whose table is in the catalog."""
    errors: list[str] = []
    table = catalog.tables[p.table]
    if p.strategy not in STRATEGIES:
        errors.append(f"{where}: strategy {p.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if p.tier not in TIERS:
        errors.append(f"{where}: tier {p.tier!r} is not one of {', '.join(TIERS)}")
    if p.chunk_rows <= 0:
        errors.append(f"{where}: chunk_rows must be positive")
    for column in (*p.partition_columns, *p.type_overrides):
        if column not in table.column_names:
            errors.append(f"{where}: column {column!r} does not exist")
    for column, override in p.type_overrides.items():
        if column in table.column_names:
            try:
                map_column(table.column(column), override)
            except TypeMappingError as exc:
                errors.append(f"{where}: type_overrides: {exc}")
    if p.strategy == "event" and not p.date_columns:
        errors.append(f"{where}: strategy event needs date_columns")
    if p.strategy == "upsert":
        if not p.partition_columns:
            errors.append(f"{where}: strategy upsert needs created_column and/or modified_column")
        if not table.primary_key:
            errors.append(f"{where}: strategy upsert needs a primary key")
    for column in p.partition_columns:
        if column in table.column_names and table.column(column).data_type not in DATE_TYPES:
            errors.append(f"{where}: column {column!r} is {table.column(column).column_type}, not a date")
    if p.strategy == "child":
        errors.extend(_child_errors(plan, catalog, p, where))
    if p.capture not in CAPTURES:
        errors.append(f"{where}: capture {p.capture!r} is not one of {', '.join(CAPTURES)}")
    elif p.capture == "binlog" and (p.strategy == "snapshot" or not table.primary_key):
        errors.append(f"{where}: capture binlog needs a primary key and a dated strategy (event, child, "
                      f"upsert), not {p.strategy}{'' if table.primary_key else ' without a primary key'}")
    return errors


def _child_errors(plan: SourcePlan, catalog: Catalog, p: TablePlan, where: str) -> list[str]:
    if not p.parent:
        return [f"{where}: strategy child needs parent (a relationship name)"]
    try:
        rel = catalog.relationship(p.parent)
    except KeyError:
        return [f"{where}: parent relationship {p.parent!r} not found in the catalog"]
    if rel.table != p.table:
        return [f"{where}: relationship {p.parent} belongs to {rel.table}, not {p.table}"]
    parent_plan = plan.tables.get(rel.referenced_table)
    if rel.referenced_table in plan.broken or (parent_plan is not None and parent_plan.strategy not in STRATEGIES):
        return []  # the parent's entry is reported; this table does not load with it (isolate)
    if parent_plan is None or parent_plan.strategy not in ("event", "child", "upsert"):
        return [f"{where}: parent table {rel.referenced_table} must be planned as event, child or upsert"]
    parent = catalog.tables.get(rel.referenced_table)
    if parent is None:
        return [f"{where}: parent table {rel.referenced_table} is not in the catalog"]
    keys = {parent.primary_key, *parent.unique_keys}
    if rel.referenced_columns not in keys:
        return [f"{where}: {p.parent} must reference a primary or unique key of {parent.name}"]
    seen = {p.table}
    current = parent_plan
    while current.strategy == "child":
        if current.table in seen:
            return [f"{where}: parent chain loops back to {current.table}"]
        seen.add(current.table)
        try:
            current = plan.tables[catalog.relationship(current.parent or "").referenced_table]
        except KeyError:
            break  # a broken ancestor: its own entry is reported
    return []


# --- proposals -------------------------------------------------------------------------

_EVENT_NAMES = ("emision", "fechahora", "fecha", "fechaemision", "fechacompra", "created_at", "created")
_CREATED = re.compile(r"(alta|created|creacion|insert)", re.IGNORECASE)
# A modification stamp: rewritten when the row changes, so it is not the row's day of creation.
_MODIFIED = re.compile(r"(modif|update|changed|cambio|actualiz)", re.IGNORECASE)
# Dates about something else than the row's creation: births, expiries.
_NOT_EVENT = re.compile(r"(nacim|birth|(^|_)dob($|_)|fecha_?nac|vencim|expir|caduc)", re.IGNORECASE)
_DATE_LIKE = re.compile(r"(fecha|emision|date|created|updated|modified)", re.IGNORECASE)
MAX_NULL_RATIO = 0.5  # a partition date must be set in most rows
MAX_FUTURE_RATIO = 0.01  # creation dates are not in the future
DECADES_APART = dt.timedelta(days=15 * 365)  # mean date this far before the table's other dates: a birth date


def is_modification_stamp(column: Column) -> bool:
    """`ON UPDATE CURRENT_TIMESTAMP`, or a name such as updated_at, last_update, FechaModificacion."""
    return column.data_type in DATE_TYPES and (column.on_update or bool(_MODIFIED.search(column.name)))


def chunk_rows_for(rows: int) -> int:
    """The old system's chunk sizes by volume."""
    if rows >= 30_000_000:
        return 50_000
    if rows >= 1_000_000:
        return 100_000
    return 200_000


def tier_for(strategy: str, rows: int) -> str:
    """The old system's volume thresholds."""
    if strategy == "snapshot":
        return "master_weekly" if rows < 1_000 else "master_daily"
    if rows >= 30_000_000:
        return "critical"
    if rows >= 9_000_000:
        return "high"
    return "standard"


def _rejections(
    dates: list[Column], profiles: dict[str, DateProfile]
) -> dict[str, str]:
    """Why each date column that cannot be a row's day is rejected (name or data)."""
    reasons: dict[str, str] = {}
    for c in dates:
        p = profiles.get(c.name)
        if _NOT_EVENT.search(c.name):
            reasons[c.name] = "a birth or expiry date by its name"
        elif p is None or not p.rows:
            continue  # no data to judge by
        elif p.null_ratio > MAX_NULL_RATIO:
            reasons[c.name] = f"NULL in {p.null_ratio:.0%} of rows"
        elif p.future_ratio > MAX_FUTURE_RATIO:
            reasons[c.name] = f"{p.future_ratio:.0%} of its dates are in the future (up to {p.newest})"
    means = {c.name: profiles[c.name].mean for c in dates if c.name not in reasons
             and c.name in profiles and profiles[c.name].mean}
    for name, mean in means.items():
        others = sorted(m for n, m in means.items() if n != name)
        if mean and others and others[len(others) // 2] - mean > DECADES_APART:
            oldest = profiles[name].oldest
            reasons[name] = f"its dates (from {oldest}, mean {mean}) are decades before the table's other dates"
    return reasons


def propose(
    table: Table,
    catalog: Catalog,
    planned: dict[str, TablePlan],
    profiles: dict[str, DateProfile] | None = None,
) -> TablePlan:
    """A first plan for a new table, from its date columns and their data, relationships and volume.

    `profiles` (from `catalog.profile.profile_dates`) grounds the choice in the data: without
    them only names decide. A modification stamp makes the table `upsert` (it has a primary
    key) or `snapshot` (it has none), never `event`: an event table keyed by a stamp would
    land a row again every time it is updated.
    """
    profiles = profiles or {}
    all_dates = [c for c in table.columns if c.data_type in DATE_TYPES]
    stamps = sorted((c for c in all_dates if is_modification_stamp(c)), key=lambda c: (not c.on_update, c.ordinal))
    rejected = _rejections([c for c in all_dates if c not in stamps], profiles)
    usable = [c for c in all_dates if c not in stamps and c.name not in rejected and _DATE_LIKE.search(c.name)]
    ranked = sorted(
        usable, key=lambda c: (_EVENT_NAMES.index(c.name.lower()) if c.name.lower() in _EVENT_NAMES
                               else len(_EVENT_NAMES), c.ordinal)
    )
    created = next((c.name for c in ranked if _CREATED.search(c.name)), ranked[0].name if ranked else None)
    rows = table.row_estimate
    notes = [f"{name} not a partition date: {why}" for name, why in rejected.items()]
    if stamps and table.primary_key:
        plan = TablePlan(table.name, strategy="upsert", created_column=created, modified_column=stamps[0].name)
    elif stamps:
        plan = TablePlan(table.name, strategy="snapshot")
        notes.insert(0, f"rows change ({stamps[0].name} is a modification stamp) and there is no primary key "
                        "to merge them on: whole table each day")
    elif ranked:
        plan = TablePlan(table.name, strategy="event", date_columns=(ranked[0].name,))
        chosen = profiles.get(ranked[0].name)
        if chosen is not None and chosen.non_null < chosen.rows:
            notes.insert(0, f"{ranked[0].name} is NULL in {chosen.null_ratio:.1%} of rows: "
                            "they land in the first partition")
        elif chosen is None and ranked[0].nullable:
            notes.insert(0, f"rows whose {ranked[0].name} is NULL land in the first partition")
    else:
        parent = _parent_relationship(table, catalog, planned)
        if parent:
            plan = TablePlan(table.name, strategy="child", parent=parent)
        else:
            plan = TablePlan(table.name, strategy="snapshot")
            notes.insert(0, "no usable date column or dated parent found: whole table each day")
    return TablePlan(
        **{
            **plan.__dict__,
            "tier": tier_for(plan.strategy, rows),
            "chunk_rows": chunk_rows_for(rows),
            "proposed": True,
            "note": "; ".join(notes) or None,
        }
    )


def _parent_relationship(table: Table, catalog: Catalog, planned: dict[str, TablePlan]) -> str | None:
    """A relationship over NOT NULL columns to a dated table: a child row always has a parent."""
    for rel in sorted(catalog.relationships_of(table.name), key=lambda r: (r.inferred, r.name)):
        parent = planned.get(rel.referenced_table)
        if parent is None or parent.strategy not in ("event", "child", "upsert") or rel.self_referencing:
            continue
        if all(not table.column(c).nullable for c in rel.columns):
            return rel.name
    return None


def pending_review_message(plan: SourcePlan, path: Path) -> str | None:
    """What to do about proposals nobody reviewed yet, or None when there are none."""
    pending = plan.pending_review
    if not pending:
        return None
    return (
        f"source {plan.source}: {len(pending)} proposed plan entries are not loaded until reviewed: "
        f"{', '.join(pending)}. Review them in {path}, then accept them all with "
        f"`plex-etl accept --source {plan.source}` (or one with `--table NAME`, or delete its "
        "`proposed: true` line by hand)."
    )


_ENTRY = re.compile(r"^  (?P<name>[^\s#:][^:]*):", re.MULTILINE)
_PROPOSED_LINE = re.compile(r"^ {4}proposed: true[ \t]*(#.*)?\n", re.MULTILINE)
_PROPOSED_FLOW = re.compile(r",\s*proposed:\s*true\b")


def accept_proposals(path: Path, source: str, tables: list[str] | None = None) -> list[str]:
    """Mark the reviewed proposals of a plan file as accepted (all of them, or `tables`) by
    removing their `proposed: true`, leaving every other line and comment as written.
    Returns the tables accepted; a table named in `tables` that has no proposal is an error."""
    text = path.read_text()
    plan = load_plan(path, source)
    wanted = plan.pending_review if tables is None else list(tables)
    unknown = [t for t in wanted if t not in plan.pending_review]
    if unknown:
        raise PlanError(f"{path}: no proposed entry for {', '.join(unknown)} "
                        f"(proposed: {', '.join(plan.pending_review) or 'none'})")
    body_start = text.find("\ntables:")
    if body_start < 0:
        return []
    entries = list(_ENTRY.finditer(text, body_start))
    pieces, last = [], 0
    for i, entry in enumerate(entries):
        end = entries[i + 1].start() if i + 1 < len(entries) else len(text)
        if entry["name"].strip() in wanted:
            block = text[entry.start():end]
            block = _PROPOSED_FLOW.sub("", _PROPOSED_LINE.sub("", block))
            pieces += [text[last:entry.start()], block]
            last = end
    path.write_text("".join(pieces) + text[last:])
    accepted = load_plan(path, source)
    still = [t for t in wanted if t in accepted.pending_review]
    if still:
        raise PlanError(f"{path}: could not remove `proposed: true` of {', '.join(still)}: edit them by hand")
    return wanted


def oldest_partition_day(plans: list[TablePlan], profiles: dict[str, dict[str, DateProfile]]) -> dt.date | None:
    """The oldest date present in the partition columns of `plans` (event and upsert tables)."""
    days = [
        profile.oldest
        for p in plans if p.strategy in ("event", "upsert")
        for c in p.partition_columns
        if (profile := profiles.get(p.table, {}).get(c)) is not None and profile.oldest is not None
    ]
    return min(days, default=None)


def propose_missing(
    plan: SourcePlan, catalog: Catalog, profiles: dict[str, dict[str, DateProfile]] | None = None
) -> list[TablePlan]:
    """Proposals for catalog tables the plan does not mention; dated parents first.

    `profiles` holds the date profiles of the tables (by table, then column), when read.
    """
    profiles = profiles or {}
    planned = dict(plan.tables)
    proposals: list[TablePlan] = []
    # A broken entry is still the user's: never proposed again (the file would hold the key twice).
    pending = [t for n, t in sorted(catalog.tables.items()) if n not in planned and n not in plan.broken]
    # Tables with their own dates first, so children can attach to parents proposed in this run.
    for _ in range(len(pending) + 1):
        progress = False
        for table in list(pending):
            proposal = propose(table, catalog, planned, profiles.get(table.name))
            if proposal.strategy == "snapshot" and any(
                r.referenced_table in {t.name for t in pending} for r in catalog.relationships_of(table.name)
            ):
                continue  # its parent may still become dated in a later pass
            planned[table.name] = proposal
            proposals.append(proposal)
            pending.remove(table)
            progress = True
        if not progress:
            break
    for table in pending:
        proposal = propose(table, catalog, planned, profiles.get(table.name))
        planned[table.name] = proposal
        proposals.append(proposal)
    return proposals


def render_entry(p: TablePlan) -> str:
    """YAML for one plan entry, indented under `tables:`."""
    body: dict[str, Any] = {"include": p.include, "strategy": p.strategy}
    if p.date_columns:
        body["date_columns"] = list(p.date_columns)
    for key in ("parent", "created_column", "modified_column"):
        if getattr(p, key):
            body[key] = getattr(p, key)
    body["tier"] = p.tier
    body["chunk_rows"] = p.chunk_rows
    if p.type_overrides:
        body["type_overrides"] = dict(p.type_overrides)
    if p.capture != "poll":
        body["capture"] = p.capture
    if p.proposed:
        body["proposed"] = True
    if p.note:
        body["note"] = p.note
    text = yaml.safe_dump({p.table: body}, sort_keys=False, allow_unicode=True, width=120)
    return "".join("  " + line + "\n" for line in text.splitlines())


PLAN_HEADER = """\
# Load plan for source {source}: hand-owned. `plex-etl discover` appends entries for new
# tables (proposed: true) and never changes what is written here. Review a proposal, then
# delete its `proposed` line (or run `plex-etl accept --source {source}`): until then the table
# does not load. Strategies: event | child | upsert | snapshot (see DESIGN.md); tiers: {tiers}.
defaults:
  first_day: {first_day}     # history floor: undated rows and rows dated before it land on this day{first_day_note}
  window_days: {window_days}           # daily partitions: at least the last N days; the first also loads all history
  lookback_days: 3          # partitions re-loaded at every tick of a tier
  weekly_catchup_days: 7    # partitions re-loaded by the weekly catch-up
  gap_fill_days: 30         # missing or failed partitions this recent load at every tick (< window_days)
  snapshot_retention_days: 90
  tier_lookback_days: {{}}    # e.g. {{critical: 2}}
tables:
"""


DEFAULT_FIRST_DAY = dt.date(2020, 1, 1)


def append_proposals(
    path: Path, source: str, proposals: list[TablePlan], first_day: dt.date | None = None
) -> None:
    """Write proposals at the end of the plan (creating it with its header if absent).

    A new plan starts at `first_day` (the oldest date found in the proposed partition
    columns), else at DEFAULT_FIRST_DAY.
    """
    if not path.exists():
        note = " (oldest date in the data)" if first_day else ""
        path.write_text(PLAN_HEADER.format(
            source=source, tiers=", ".join(TIERS), first_day=first_day or DEFAULT_FIRST_DAY, first_day_note=note,
            window_days=DEFAULT_WINDOW_DAYS,
        ))
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    if not re.search(r"^tables:", text, re.MULTILINE):
        text += "tables:\n"
    elif re.search(r"^tables:\s*\{\s*\}\s*$", text, re.MULTILINE):
        text = re.sub(r"^tables:\s*\{\s*\}\s*$", "tables:", text, flags=re.MULTILINE)
    path.write_text(text + "".join(render_entry(p) for p in proposals))
