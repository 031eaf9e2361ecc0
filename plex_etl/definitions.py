"""The Dagster code location: `dagster dev -m plex_etl.definitions`.

Reads only committed files (sources.yaml, each source's catalog and plan): no database
connection at import time. Settings come from the environment:
PLEX_ETL_GCP_PROJECT (BigQuery when set, else the local DuckDB warehouse),
PLEX_ETL_WAREHOUSE (auto | bigquery | local), PLEX_ETL_DATASET, PLEX_ETL_BIGQUERY_LOCATION,
PLEX_ETL_BIGQUERY_ENDPOINT, PLEX_ETL_LOCAL_WAREHOUSE, PLEX_ETL_CONFIG_DIR.
"""

import logging
from dataclasses import dataclass
from typing import Any

import dagster as dg

from plex_etl.catalog.plan import pending_review_message
from plex_etl.catalog.store import catalog_path, load_source_catalog, plan_path
from plex_etl.defs.alerts import check_and_freshness_alert, run_failure_alert
from plex_etl.defs.assets import build_source_assets
from plex_etl.defs.automation import automation_sensor, first_partition_schedule, reconcile_schedule
from plex_etl.defs.cdc import build_cdc_job, cdc_sensor, without_polling
from plex_etl.defs.checks import build_orphan_checks, build_reconcile_checks
from plex_etl.defs.io_manager import WarehouseIOManager
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, warehouse_from_environment
from plex_etl.defs.views import build_view_assets
from plex_etl.extract.spec import warehouse_table_name
from plex_etl.sources import Source, load_sources

log = logging.getLogger(__name__)


@dataclass
class SourceDefinitions:
    """What one source adds to the code location."""

    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    schedules: list[dg.ScheduleDefinition]
    sensors: list[dg.SensorDefinition]
    table_keys: dict[str, dg.AssetKey]  # warehouse table -> asset key, for the views


def _source_definitions(source: Source, resources: dict[str, Any]) -> SourceDefinitions:
    catalog, plan = load_source_catalog(source.name)
    if pending := pending_review_message(plan, plan_path(source.name)):
        log.warning(pending)
    assets = without_polling(build_source_assets(source, catalog, plan), source, catalog, plan)
    cdc_job = build_cdc_job(source, catalog, plan)  # tables with `capture: binlog`
    sensors = [cdc_sensor(source, cdc_job)] if cdc_job else []
    reconciliation = build_reconcile_checks(source, catalog, plan)
    checks = [c for c in (build_orphan_checks(source.name, catalog, plan), reconciliation) if c]
    schedules = [reconcile_schedule(source, reconciliation)] if reconciliation else []
    dated = [table_key(source.name, catalog, p.table) for p in plan.included if p.strategy != "snapshot"]
    if dated:
        schedules.append(first_partition_schedule(source, plan, dated))
    table_keys = {
        warehouse_table_name(source.name, catalog.table(p.table)): table_key(source.name, catalog, p.table)
        for p in plan.included
    }
    # Dagster validates names only when Definitions are resolved: do it per source, so that
    # an invalid name fails this source here rather than the whole code location later.
    dg.Definitions.validate_loadable(
        dg.Definitions(assets=assets, asset_checks=checks, schedules=schedules, sensors=sensors, resources=resources)
    )
    return SourceDefinitions(assets, checks, schedules, sensors, table_keys)


def build_definitions() -> dg.Definitions:
    """Every source's assets and checks. A source whose catalog or plan cannot be built (a stale
    plan entry after a table rename, a broken file) is left out with an error in the log and
    in the code location's metadata (`plex_etl/skipped_sources`): the other sources load."""
    built: list[SourceDefinitions] = []
    skipped: dict[str, str] = {}
    warehouse = warehouse_from_environment()
    resources = {
        "mysql": MySQLResource(),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
    }
    for source in load_sources().values():
        if not catalog_path(source.name).exists():
            continue  # a source without a catalog yet: `plex-etl discover --source NAME`
        try:
            built.append(_source_definitions(source, resources))
        except Exception as exc:  # one bad source must not take down the others
            skipped[source.name] = f"{type(exc).__name__}: {exc}"
            log.error("source '%s' skipped, its assets are not loaded: %s", source.name, skipped[source.name])
    table_keys = {name: key for b in built for name, key in b.table_keys.items()}
    return dg.Definitions(
        assets=[a for b in built for a in b.assets] + build_view_assets(table_keys),
        asset_checks=[c for b in built for c in b.checks],
        sensors=[automation_sensor(), run_failure_alert, check_and_freshness_alert,
                 *(s for b in built for s in b.sensors)],
        schedules=[s for b in built for s in b.schedules],
        resources=resources,
        metadata={"plex_etl/skipped_sources": skipped} if skipped else None,
    )


defs = build_definitions()
