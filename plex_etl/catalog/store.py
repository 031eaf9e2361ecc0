"""Where a source's catalog and plan live, and the `discover` workflow that writes them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from plex_etl.catalog.model import Catalog, dump_catalog, load_catalog
from plex_etl.catalog.plan import (
    PlanError,
    SourcePlan,
    append_proposals,
    isolate,
    load_plan,
    oldest_partition_day,
    pending_review_message,
    propose_missing,
)
from plex_etl.catalog.profile import DateProfile, date_columns, profile_dates
from plex_etl.catalog.report import catalog_markdown, diff_catalogs
from plex_etl.sources import Source, config_dir

if TYPE_CHECKING:  # discovery's imports (SQLAlchemy) load only when it runs: Definitions need none
    import sqlalchemy as sa


def catalog_path(source: str, directory: Path | None = None) -> Path:
    return (directory or config_dir()) / f"{source}.catalog.yaml"


def plan_path(source: str, directory: Path | None = None) -> Path:
    return (directory or config_dir()) / f"{source}.plan.yaml"


@dataclass(frozen=True)
class SourceConfig:
    """A source's committed catalog and the part of its plan that loads."""

    catalog: Catalog
    plan: SourcePlan  # only the tables that load
    problems: dict[str, str]  # table -> why it does not load (the plan file and entry named)


def load_source(source: str, directory: Path | None = None) -> SourceConfig:
    """The catalog and plan of a source, each table's entry checked on its own: a table whose
    entry is broken (or whose table left the catalog) stays out with its reason, and so do the
    child tables read through it; the others load. Raises (YamlFileError, CatalogError,
    PlanError, naming the file) only when the source as a whole cannot be read."""
    path = catalog_path(source, directory)
    if not path.exists():
        raise FileNotFoundError(
            f"no catalog for source '{source}' at {path}: run `plex-etl discover --source {source}`"
        )
    catalog = load_catalog(path)
    plans = plan_path(source, directory)
    plan = load_plan(plans, source)
    try:
        plan, problems = isolate(plan, catalog)
    except PlanError as exc:
        raise PlanError(f"{plans} (catalog {path.name}): {exc}") from None
    return SourceConfig(catalog, plan, {t: _in_file(why, plans) for t, why in problems.items()})


def _in_file(message: str, plans: Path) -> str:
    """A table's problem, naming the plan file (YAML errors name it already, with the line)."""
    return message if str(plans) in message else f"{plans}: {message}"


def load_source_catalog(source: str, directory: Path | None = None) -> tuple[Catalog, SourcePlan]:
    """The committed catalog and plan of a source, checked against each other: any problem, of
    the source or of one table, raises PlanError naming the file (for commands that act on the
    whole source; the code location isolates tables instead, see `load_source`)."""
    config = load_source(source, directory)
    if config.problems:
        raise PlanError("invalid plan:\n  " + "\n  ".join(config.problems.values()))
    return config.catalog, config.plan


@dataclass(frozen=True)
class DiscoveryReport:
    catalog: Catalog
    changes: list[str]
    proposals: list[str]
    pending_review: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


def profile_source(connection: sa.Connection, catalog: Catalog, plan: SourcePlan) -> dict[str, dict[str, DateProfile]]:
    """Date profiles (one query per table): every date column of tables the plan does not
    mention yet, the partition columns of planned event and upsert tables."""
    profiles = {}
    for name, table in sorted(catalog.tables.items()):
        planned = plan.tables.get(name)
        if planned is None:
            columns = date_columns(table)
        elif planned.include and planned.strategy in ("event", "upsert"):
            columns = [c for c in planned.partition_columns if c in table.column_names]
        else:
            continue
        if columns:
            profiles[name] = profile_dates(connection, table, columns)
    return profiles


def first_day_hint(plan: SourcePlan, path: Path, profiles: dict[str, dict[str, DateProfile]]) -> str | None:
    """A hint when the planned partition columns hold data older than the plan's first_day."""
    oldest = oldest_partition_day([p for p in plan.tables.values() if p.include], profiles)
    if oldest is None or oldest >= plan.first_day:
        return None
    return (
        f"hint: dated tables hold data from {oldest}, before first_day {plan.first_day} of {path}; "
        f"those rows load into the first partition. For daily partitions back to then, set "
        f"`first_day: {oldest}` under defaults."
    )


def run_discover(
    source: Source,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    directory: Path | None = None,
    docs_directory: Path | None = None,
    log: Callable[[str], None] = print,
    access: Callable[[sa.Connection, Catalog, SourcePlan], str] | None = None,
) -> DiscoveryReport:
    """Rewrite the catalog from the database, append plan proposals, print what changed.

    `access` (connection, catalog, plan) -> the Markdown section on the partition reads'
    access paths written into the docs (the CLI passes extract.access's; the catalog layer
    does not read partitions itself)."""
    from plex_etl.catalog.discover import boolean_columns, discover
    from plex_etl.mysql import connect

    path = catalog_path(source.name, directory)
    previous = load_catalog(path) if path.exists() else None
    with connect(source) as connection:
        catalog = discover(connection, source.name, source.database, include, exclude, previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_catalog(catalog, path)
    changes = diff_catalogs(previous, catalog)

    plans = plan_path(source.name, directory)
    existed = plans.exists()
    plan = load_plan(plans, source.name)
    with connect(source) as connection:
        profiles = profile_source(connection, catalog, plan)
        proposals = propose_missing(plan, catalog, profiles)
        proposals = [
            replace(p, type_overrides={c: "bool" for c in boolean_columns(connection, catalog.table(p.table))})
            for p in proposals
        ]
    hints = []
    if proposals:
        first_day = None if existed else oldest_partition_day(proposals, profiles)
        append_proposals(plans, source.name, proposals, first_day)
        plan = load_plan(plans, source.name)
        missing = [p.table for p in proposals if p.table not in plan.tables]
        if missing:
            raise RuntimeError(f"{plans}: proposals did not land under `tables:` for {missing}")
    if docs_directory is not None:
        section = ""
        if access is not None:
            with connect(source) as connection:
                section = access(connection, catalog, plan)
        docs_directory.mkdir(parents=True, exist_ok=True)
        (docs_directory / f"{source.name}.md").write_text(catalog_markdown(catalog, plan, section))

    declared = sum(1 for r in catalog.relationships if not r.inferred)
    inferred = len(catalog.relationships) - declared
    log(f"{source.describe()}: {len(catalog.tables)} tables, "
        f"{sum(len(t.columns) for t in catalog.tables.values())} columns")
    log(f"{declared} declared relationships, {inferred} inferred")
    for change in changes:
        log(f"  changed: {change}")
    if previous is not None and not changes:
        log("  no structural change since the last catalog")
    for p in proposals:
        log(f"  proposed plan for {p.table}: {p.strategy}, tier {p.tier}" + (f" ({p.note})" if p.note else ""))
    if existed and (hint := first_day_hint(plan, plans, profiles)):
        hints.append(hint)
    pending = pending_review_message(plan, plans)
    for line in (*hints, *([pending] if pending else [])):
        log(line)
    return DiscoveryReport(catalog, changes, [p.table for p in proposals], plan.pending_review, hints)
