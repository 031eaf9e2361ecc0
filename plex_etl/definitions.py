"""The Dagster code location: `dagster dev -m plex_etl.definitions`.

Reads only committed files (sources.yaml, each source's catalog and plan): no database
connection at import time. Settings come from the environment:
PLEX_ETL_GCP_PROJECT (BigQuery when set, else the local DuckDB warehouse),
PLEX_ETL_WAREHOUSE (auto | bigquery | local), PLEX_ETL_DATASET, PLEX_ETL_BIGQUERY_LOCATION,
PLEX_ETL_BIGQUERY_ENDPOINT, PLEX_ETL_LOCAL_WAREHOUSE, PLEX_ETL_CONFIG_DIR.
"""

import os

import dagster as dg

from plex_etl.catalog.store import catalog_path, load_source_catalog
from plex_etl.defs.alerts import run_failure_alert
from plex_etl.defs.assets import build_source_assets
from plex_etl.defs.automation import automation_sensor
from plex_etl.defs.checks import build_orphan_checks
from plex_etl.defs.io_manager import WarehouseIOManager
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import DEFAULT_LOCAL_WAREHOUSE, MySQLResource, WarehouseResource
from plex_etl.defs.views import build_view_assets
from plex_etl.extract.spec import warehouse_table_name
from plex_etl.sources import load_sources


def build_definitions() -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    checks: list[dg.AssetChecksDefinition] = []
    table_keys: dict[str, dg.AssetKey] = {}
    for source in load_sources().values():
        if not catalog_path(source.name).exists():
            continue  # a source without a catalog yet: `plex-etl discover --source NAME`
        catalog, plan = load_source_catalog(source.name)
        assets += build_source_assets(source, catalog, plan)
        orphans = build_orphan_checks(source.name, catalog, plan)
        checks += [orphans] if orphans else []
        table_keys.update(
            {warehouse_table_name(source.name, catalog.table(p.table)): table_key(source.name, catalog, p.table)
             for p in plan.included}
        )
    assets += build_view_assets(table_keys)
    warehouse = WarehouseResource(
        kind=os.getenv("PLEX_ETL_WAREHOUSE", "auto"),
        project=os.getenv("PLEX_ETL_GCP_PROJECT") or None,
        dataset=os.getenv("PLEX_ETL_DATASET", "plex_analytics"),
        location=os.getenv("PLEX_ETL_BIGQUERY_LOCATION") or None,
        api_endpoint=os.getenv("PLEX_ETL_BIGQUERY_ENDPOINT") or None,
        local_path=os.getenv("PLEX_ETL_LOCAL_WAREHOUSE", DEFAULT_LOCAL_WAREHOUSE),
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        sensors=[automation_sensor(), run_failure_alert],
        resources={
            "mysql": MySQLResource(),
            "warehouse": warehouse,
            "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
        },
    )


defs = build_definitions()
