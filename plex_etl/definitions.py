"""The Dagster code location: `dagster dev -m plex_etl.definitions`.

Reads only committed files (sources.yaml, each source's catalog and plan): no database
connection at import time. Settings come from the environment:
PLEX_ETL_GCP_PROJECT (BigQuery when set, else the local DuckDB warehouse),
PLEX_ETL_WAREHOUSE (auto | bigquery | local), PLEX_ETL_DATASET, PLEX_ETL_BIGQUERY_LOCATION,
PLEX_ETL_BIGQUERY_ENDPOINT, PLEX_ETL_LOCAL_WAREHOUSE, PLEX_ETL_CONFIG_DIR.
"""

import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.naming import base_name
from plex_etl.catalog.plan import SourcePlan, pending_review_message
from plex_etl.catalog.store import catalog_path, load_source, plan_path
from plex_etl.defs.alerts import alerts_sensor
from plex_etl.defs.assets import build_source_assets
from plex_etl.defs.automation import reconcile_job, tier_interval, tier_sensors, views_sensor
from plex_etl.defs.cdc import capture_checks
from plex_etl.defs.checks import build_orphan_checks, build_reconcile_checks, build_table_checks
from plex_etl.defs.dead_runs import dead_runs_sensor
from plex_etl.defs.io_manager import warehouse_io_manager
from plex_etl.defs.keys import table_key
from plex_etl.defs.problems import SOURCE_STAND_IN, Problem, problem_checks, problems_sensor, stand_in_asset
from plex_etl.defs.resources import MySQLResource, warehouse_from_environment
from plex_etl.defs.status import build_status, status_tables
from plex_etl.defs.views import build_view_assets, view_problems
from plex_etl.extract.spec import warehouse_table_name
from plex_etl.sources import Source, load_sources
from plex_etl.yamlio import garbage_collection_paused

log = logging.getLogger(__name__)


@dataclass
class SourceDefinitions:
    """What one source adds to the code location."""

    plan: SourcePlan
    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    jobs: list[Any]  # asset jobs (define_asset_job)
    table_keys: dict[str, tuple[dg.AssetKey, str]]  # warehouse table -> (asset key, tier), for the views
    problems: dict[str, Problem]  # warehouse table -> why it does not load (a stand-in asset shows it)

    def validate(self, resources: dict[str, Any]) -> None:
        """Raises what Dagster would raise when loading this source alone."""
        dg.Definitions.validate_loadable(
            dg.Definitions(assets=self.assets, asset_checks=self.checks, jobs=self.jobs,
                           resources=resources)
        )


def _problem_key(source: str, catalog: Catalog, plan: SourcePlan, table: str) -> tuple[str, dg.AssetKey]:
    """(warehouse table, asset key) of a table that does not load: its own when the catalog
    still has it, else the names a table of that name would get (unless a loading table took
    them since)."""
    if table in catalog.tables:
        return warehouse_table_name(source, catalog.table(table)), table_key(source, catalog, table)
    taken = {table_key(source, catalog, p.table) for p in plan.included}
    name = base_name(table)
    if dg.AssetKey([source, name]) in taken:
        name += "_plan_entry"
    return f"{source}_{name}", dg.AssetKey([source, name])


def _source_definitions(source: Source, warehouse_kind: str) -> SourceDefinitions:
    config = load_source(source.name)
    catalog, plan = config.catalog, config.plan
    if pending := pending_review_message(plan, plan_path(source.name)):
        log.warning(pending)
    problems = {}
    for table, why in sorted(config.problems.items()):
        log.error("table %s.%s does not load: %s", source.name, table, why)
        name, key = _problem_key(source.name, catalog, plan, table)
        problems[name] = Problem(key, why, source.name)
    assets = build_source_assets(source, catalog, plan, warehouse_kind)
    reconciliation = build_reconcile_checks(source, catalog, plan)
    tables = sorted(p.table for p in plan.included)
    checks = [build_table_checks(source.name, catalog, plan, table) for table in tables]
    checks += [c for c in (build_orphan_checks(source, catalog, plan), reconciliation,
                           capture_checks(source, catalog, plan)) if c]
    jobs = [reconcile_job(source, reconciliation)] if reconciliation else []
    table_keys = {
        warehouse_table_name(source.name, catalog.table(p.table)): (table_key(source.name, catalog, p.table), p.tier)
        for p in plan.included
    }
    return SourceDefinitions(plan, assets, checks, jobs, table_keys, problems)


def _skip(skipped: dict[str, str], source: str, exc: Exception) -> None:
    skipped[source] = f"{type(exc).__name__}: {exc}"
    log.error("source '%s' skipped, its assets are not loaded: %s", source, skipped[source])


def _combine(
    built: dict[str, tuple[Source, SourceDefinitions]], skipped: dict[str, str], resources: dict[str, Any], kind: str
) -> dg.Definitions:
    """The code location: the sources built, the views over their tables, the alerts, and a
    stand-in asset for every table, view or source that does not load (defs/problems.py)."""
    parts = [b for _, b in built.values()]
    table_keys = {t: key_tier for b in parts for t, key_tier in b.table_keys.items()}
    loaded = {t: key for t, (key, _tier) in table_keys.items()}
    views = build_view_assets(loaded, {t: tier_interval(tier) for t, (_key, tier) in table_keys.items()}, kind)
    tables = {t: p for b in parts for t, p in b.problems.items()}
    problems = [
        *(Problem(dg.AssetKey([name, SOURCE_STAND_IN]), f"source {name} is not loaded (none of its tables): {why}",
                  name) for name, why in sorted(skipped.items())),
        *tables.values(),
        *view_problems(loaded, tables, skipped),
    ]
    problem_check = problem_checks(problems)
    table_assets = [a for b in parts for a in b.assets]
    checks = [c for b in parts for c in b.checks]
    status, status_sensor = build_status(
        status_tables(table_assets, checks, {s.name: s.time_zone for s, _ in built.values()}))
    return dg.Definitions(
        assets=[*table_assets, *views, status, *(stand_in_asset(p) for p in problems)],
        asset_checks=checks + ([problem_check] if problem_check else []),
        sensors=[
            *tier_sensors([s for s, _ in built.values()], {n: b.plan for n, (_, b) in built.items()}),
            views_sensor(), alerts_sensor, dead_runs_sensor, problems_sensor(problems), status_sensor,
        ],
        jobs=[j for b in parts for j in b.jobs],
        resources=resources,
        metadata={"plex_etl/skipped_sources": skipped} if skipped else None,
    )


STRICT_ENV = "PLEX_ETL_STRICT_CONFIG"


class ConfigurationError(RuntimeError):
    """Strict mode (PLEX_ETL_STRICT_CONFIG=1): some table, view or source does not load."""


def build_definitions() -> dg.Definitions:
    """Every source's assets and checks. A table whose plan entry is broken (or whose table left
    the catalog) is left out with the child tables and views read through it; a source whose
    files cannot be read, or whose definitions Dagster refuses, is left out whole. Each shows
    as a stand-in asset with a failing check (defs/problems.py) and an ERROR in the log; the
    skipped sources are also in the code location's metadata (`plex_etl/skipped_sources`).
    Everything else loads. With PLEX_ETL_STRICT_CONFIG=1 (CI, before an image is built) any
    such problem fails the load instead, so `dagster asset list` exits non-zero."""
    built: dict[str, tuple[Source, SourceDefinitions]] = {}
    skipped: dict[str, str] = {}
    warehouse = warehouse_from_environment()
    kind = warehouse.resolved_kind
    resources = {
        "mysql": MySQLResource(),
        "warehouse": warehouse,
        "warehouse_io_manager": warehouse_io_manager,
    }
    for source in load_sources().values():
        if not catalog_path(source.name).exists():
            continue  # a source without a catalog yet: `plex-etl discover --source NAME`
        try:
            built[source.name] = (source, _source_definitions(source, kind))
        except Exception as exc:  # one bad source must not take down the others
            _skip(skipped, source.name, exc)
    defs = _combine(built, skipped, resources, kind)
    # Dagster validates names, resources and selections only when Definitions are resolved.
    # Resolving the whole once here replaces validating each source: the resolved repository
    # is cached on `defs`, and Dagster's own load of the code location reuses it.
    try:
        dg.Definitions.validate_loadable(defs)
    except Exception:
        # Some source is invalid: find it by validating each alone (the cost is paid only
        # now), so that it fails by itself rather than the whole code location.
        for name, (_source, part) in list(built.items()):
            try:
                part.validate(resources)
            except Exception as exc:
                del built[name]
                _skip(skipped, name, exc)
        # Not validated again: what still fails is not one source's, and Dagster reports it.
        defs = _combine(built, skipped, resources, kind)
    problems = [*(f"source {n}: {why}" for n, why in skipped.items()),
                *(p.message for _, b in built.values() for p in b.problems.values())]
    if problems and os.environ.get(STRICT_ENV, "") not in ("", "0"):
        raise ConfigurationError(f"{len(problems)} configuration problem(s) ({STRICT_ENV} is set):\n  "
                                 + "\n  ".join(problems))
    return defs


# Building allocates ~140k objects that live as long as the process (the import leaves no
# garbage: a collection right after finds none). Collecting while building costs ~10% of it;
# freezing them afterwards keeps every later collection, and the interpreter's teardown at
# exit, from walking them again: -0.4 s of CPU per process (docs/benchmarks.md, *Loading the code location*),
# paid by every Dagster process, each run's step workers included.
with garbage_collection_paused():
    defs = build_definitions()
    gc.freeze()
