"""The Dagster code location: `dagster dev -m plex_etl.definitions`.

Reads only committed files (sources.yaml, each source's catalog and plan): no database
connection at import time. Settings come from the environment:
PLEX_ETL_GCP_PROJECT (BigQuery when set, else the local DuckDB warehouse),
PLEX_ETL_WAREHOUSE (auto | bigquery | local), PLEX_ETL_DATASET, PLEX_ETL_BIGQUERY_LOCATION,
PLEX_ETL_BIGQUERY_ENDPOINT, PLEX_ETL_LOCAL_WAREHOUSE, PLEX_ETL_CONFIG_DIR.
"""

import gc
import logging
from dataclasses import dataclass
from typing import Any

import dagster as dg

from plex_etl.catalog.plan import SourcePlan, pending_review_message
from plex_etl.catalog.store import catalog_path, load_source_catalog, plan_path
from plex_etl.defs.alerts import check_and_freshness_alert, run_failure_alert
from plex_etl.defs.assets import build_source_assets
from plex_etl.defs.automation import reconcile_job, tier_interval, tier_sensors, views_sensor
from plex_etl.defs.cdc import build_cdc_job, cdc_sensor, without_polling
from plex_etl.defs.checks import build_orphan_checks, build_reconcile_checks, build_table_checks
from plex_etl.defs.io_manager import warehouse_io_manager
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, warehouse_from_environment
from plex_etl.defs.status import build_status, status_tables
from plex_etl.defs.views import build_view_assets
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
    sensors: list[dg.SensorDefinition]
    jobs: list[Any]  # asset jobs (define_asset_job)
    table_keys: dict[str, tuple[dg.AssetKey, str]]  # warehouse table -> (asset key, tier), for the views

    def validate(self, resources: dict[str, Any]) -> None:
        """Raises what Dagster would raise when loading this source alone."""
        dg.Definitions.validate_loadable(
            dg.Definitions(assets=self.assets, asset_checks=self.checks, sensors=self.sensors, jobs=self.jobs,
                           resources=resources)
        )


def _source_definitions(source: Source, warehouse_kind: str) -> SourceDefinitions:
    catalog, plan = load_source_catalog(source.name)
    if pending := pending_review_message(plan, plan_path(source.name)):
        log.warning(pending)
    assets = without_polling(build_source_assets(source, catalog, plan, warehouse_kind), source, catalog, plan)
    cdc_job = build_cdc_job(source, catalog, plan)  # tables with `capture: binlog`
    sensors = [cdc_sensor(source, cdc_job)] if cdc_job else []
    reconciliation = build_reconcile_checks(source, catalog, plan)
    tables = sorted(p.table for p in plan.included)
    checks = [build_table_checks(source.name, catalog, plan, table) for table in tables]
    checks += [c for c in (build_orphan_checks(source, catalog, plan), reconciliation) if c]
    jobs = [reconcile_job(source, reconciliation)] if reconciliation else []
    table_keys = {
        warehouse_table_name(source.name, catalog.table(p.table)): (table_key(source.name, catalog, p.table), p.tier)
        for p in plan.included
    }
    return SourceDefinitions(plan, assets, checks, sensors, jobs, table_keys)


def _skip(skipped: dict[str, str], source: str, exc: Exception) -> None:
    skipped[source] = f"{type(exc).__name__}: {exc}"
    log.error("source '%s' skipped, its assets are not loaded: %s", source, skipped[source])


def _combine(
    built: dict[str, tuple[Source, SourceDefinitions]], skipped: dict[str, str], resources: dict[str, Any], kind: str
) -> dg.Definitions:
    """The code location: the sources built, the views over their tables, the alerts."""
    parts = [b for _, b in built.values()]
    table_keys = {t: key_tier for b in parts for t, key_tier in b.table_keys.items()}
    views = build_view_assets(
        {t: key for t, (key, _tier) in table_keys.items()},
        {t: tier_interval(tier) for t, (_key, tier) in table_keys.items()},
        kind,
    )
    tables = [a for b in parts for a in b.assets]
    checks = [c for b in parts for c in b.checks]
    status, status_sensor = build_status(
        status_tables(tables, checks, {s.name: s.time_zone for s, _ in built.values()}))
    return dg.Definitions(
        assets=[*tables, *views, status],
        asset_checks=checks,
        sensors=[
            *tier_sensors([s for s, _ in built.values()], {n: b.plan for n, (_, b) in built.items()}),
            views_sensor(), run_failure_alert, check_and_freshness_alert, *(s for b in parts for s in b.sensors),
            status_sensor,
        ],
        jobs=[j for b in parts for j in b.jobs],
        resources=resources,
        metadata={"plex_etl/skipped_sources": skipped} if skipped else None,
    )


def build_definitions() -> dg.Definitions:
    """Every source's assets and checks. A source whose catalog or plan cannot be built (a stale
    plan entry after a table rename, a broken file), or whose definitions Dagster refuses, is
    left out with an error in the log and in the code location's metadata
    (`plex_etl/skipped_sources`): the other sources load."""
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
    return defs


# Building allocates ~140k objects that live as long as the process (the import leaves no
# garbage: a collection right after finds none). Collecting while building costs ~10% of it;
# freezing them afterwards keeps every later collection, and the interpreter's teardown at
# exit, from walking them again: -0.4 s of CPU per process (docs/benchmarks.md, issue 14 A),
# paid by every Dagster process, each run's step workers included.
with garbage_collection_paused():
    defs = build_definitions()
    gc.freeze()
