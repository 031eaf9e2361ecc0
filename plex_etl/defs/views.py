"""The analytical views as assets, downstream of the tables they read.

A view refreshes after its tables load (its own automation sensor, `views_after_their_tables`)
and carries a freshness policy as strict as its most frequently refreshed table's.
"""

import datetime as dt

import dagster as dg

from plex_etl.defs.assets import WAREHOUSE_KINDS
from plex_etl.defs.automation import freshness_policy_every, view_condition
from plex_etl.defs.problems import Problem
from plex_etl.defs.resources import WarehouseResource
from plex_etl.views import View, load_views


def build_view_asset(
    view: View,
    keys_by_warehouse_table: dict[str, dg.AssetKey],
    intervals_by_warehouse_table: dict[str, dt.timedelta] | None = None,
    warehouse_kind: str = "bigquery",
) -> dg.AssetsDefinition:
    intervals = [(intervals_by_warehouse_table or {}).get(t, dt.timedelta(days=1)) for t in view.tables]
    interval = min(intervals, default=dt.timedelta(days=1))

    @dg.asset(
        key=dg.AssetKey(["views", view.name]),
        deps=[keys_by_warehouse_table[t] for t in view.tables],
        group_name="views",
        kinds={WAREHOUSE_KINDS.get(warehouse_kind, warehouse_kind), "sql"},
        description=view.description,
        metadata={"bigquery_sql": dg.MetadataValue.md(f"```sql\n{view.sql}\n```")},
        automation_condition=view_condition(),
        freshness_policy=freshness_policy_every(interval),
    )
    def _view_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get()
        store.create_view(warehouse.dataset, view.name, view.render(warehouse.dataset, store.kind))
        rows = store.query(f"SELECT COUNT(*) AS n FROM {warehouse.dataset}.{view.name}").column(0)[0].as_py()
        context.log.info(f"view {warehouse.dataset}.{view.name}: {rows:,} rows")
        return dg.MaterializeResult(metadata={"dagster/row_count": rows, "warehouse": store.kind})

    return _view_asset


def build_view_assets(
    keys_by_warehouse_table: dict[str, dg.AssetKey],
    intervals_by_warehouse_table: dict[str, dt.timedelta] | None = None,
    warehouse_kind: str = "bigquery",
) -> list[dg.AssetsDefinition]:
    """A view asset for every view whose tables are all replicated here."""
    return [
        build_view_asset(v, keys_by_warehouse_table, intervals_by_warehouse_table, warehouse_kind)
        for v in load_views()
        if all(t in keys_by_warehouse_table for t in v.tables)
    ]


def view_problems(
    loaded: dict[str, dg.AssetKey], problems: dict[str, Problem], skipped: dict[str, str]
) -> list[Problem]:
    """A problem for every view that reads a table that does not load (its plan entry is broken,
    or its source is skipped): the view does not refresh, and says why where it would be. Views
    over tables nobody replicates here (a source not configured) are left out, as before."""
    found = []
    for view in load_views():
        missing, reasons, deps = [], [], []
        for table in view.tables:
            if table in loaded:
                deps.append(loaded[table])
            elif table in problems:
                deps.append(problems[table].key)
                missing.append(table)
                reasons.append(problems[table].message)
            elif source := next((s for s in sorted(skipped) if table.startswith(f"{s}_")), None):
                missing.append(table)
                reasons.append(f"source {source} is not loaded: {skipped[source]}")
        if missing:
            found.append(Problem(
                dg.AssetKey(["views", view.name]),
                f"view {view.name} is not refreshed: it reads {', '.join(missing)}, which "
                f"do{'es' if len(missing) == 1 else ''} not load: {reasons[0]}",
                deps=tuple(deps),
            ))
    return found
