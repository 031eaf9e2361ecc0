"""The analytical views as assets, downstream of the tables they read."""

import dagster as dg

from plex_etl.defs.resources import WarehouseResource
from plex_etl.views import View, load_views


def build_view_asset(view: View, keys_by_warehouse_table: dict[str, dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["views", view.name]),
        deps=[keys_by_warehouse_table[t] for t in view.tables],
        group_name="views",
        kinds={"bigquery", "sql"},
        description=view.description,
        metadata={"bigquery_sql": dg.MetadataValue.md(f"```sql\n{view.sql}\n```")},
    )
    def _view_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get()
        store.create_view(warehouse.dataset, view.name, view.render(warehouse.dataset, store.kind))
        rows = store.query(f"SELECT COUNT(*) AS n FROM {warehouse.dataset}.{view.name}").column(0)[0].as_py()
        context.log.info(f"view {warehouse.dataset}.{view.name}: {rows:,} rows")
        return dg.MaterializeResult(metadata={"dagster/row_count": rows})

    return _view_asset


def build_view_assets(keys_by_warehouse_table: dict[str, dg.AssetKey]) -> list[dg.AssetsDefinition]:
    """A view asset for every view whose tables are all replicated here."""
    return [
        build_view_asset(v, keys_by_warehouse_table)
        for v in load_views()
        if all(t in keys_by_warehouse_table for t in v.tables)
    ]
