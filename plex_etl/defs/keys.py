"""Asset keys of replicated tables: `[source, table]`, the table's collision-free name."""

import dagster as dg

from plex_etl.catalog.model import Catalog


def table_key(source: str, catalog: Catalog, table: str) -> dg.AssetKey:
    return dg.AssetKey([source, catalog.table(table).warehouse_name or table])
