"""The asset factory: one asset per replicated table of a source's catalog.

Dated tables (event, child, upsert) are daily-partitioned: partition D holds the rows of day
D. Snapshot tables have no partitions: each materialization reads the whole table as it is
now and lands it as today's snapshot (the warehouse keeps one per day, see
docs/design-notes.md, "Snapshot assets"). Dated tables depend on snapshot tables without
a per-day mapping, so a past day never waits for a snapshot that cannot exist.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from plex_etl.catalog.graph import TableGraph, table_graph
from plex_etl.catalog.model import Catalog
from plex_etl.catalog.naming import group_name, tag_value
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.defs.automation import freshness_policy, table_condition, tier_schedule_table
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, WarehouseResource
from plex_etl.defs.retries import only_transient_retried
from plex_etl.extract.spec import ReplicatedTable, read_bounds, replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.sources import Source

IO_MANAGER_KEY = "warehouse_io_manager"
WAREHOUSE_KINDS = {"bigquery": "bigquery", "local": "duckdb"}  # the warehouse kind -> Dagster kind tag


def pool_name(source: Source) -> str:
    return f"mysql_{source.name}"


def daily_partitions(source: Source, plan: SourcePlan) -> dg.DailyPartitionsDefinition:
    """Days in the source's time zone, today included (its rows keep arriving until midnight)."""
    return dg.DailyPartitionsDefinition(
        start_date=plan.first_day.isoformat(), timezone=source.time_zone, end_offset=1
    )


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """First and last day of the run (a single-run backfill covers a range)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def source_today(source: Source) -> dt.date:
    return dt.datetime.now(ZoneInfo(source.time_zone)).date()


def is_partitioned(table_plan: TablePlan) -> bool:
    """Snapshot tables have no partitions (only today could ever load)."""
    return table_plan.strategy != "snapshot"


def column_schema(spec: ReplicatedTable, warehouse_kind: str) -> dg.TableSchema:
    """The warehouse columns as the catalog maps them, known before the first load.

    From the mapped types, not `spec.target`, whose Arrow types would import pyarrow."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=m.bigquery_type if warehouse_kind == "bigquery" else m.local_type,
                description=f"MySQL {col.column_type}",
                constraints=dg.TableColumnConstraints(nullable=col.nullable),
            )
            for name, m, col in zip(spec.column_names, spec.mapped, spec.table.columns, strict=True)
        ]
    )


def describe_table(source: Source, plan: SourcePlan, table_plan: TablePlan, table: str) -> str:
    """Markdown for the UI: what a partition holds, and when the table refreshes."""
    strategy = {
        "event": "by day of its date",
        "child": "by day of its parent row",
        "upsert": "by day of creation or modification, merged by primary key",
        "snapshot": "as a whole-table snapshot per day (history kept in the warehouse)",
    }[table_plan.strategy]
    how = []
    if table_plan.partition_columns:
        how.append(f"date: {', '.join(table_plan.partition_columns)}")
    if table_plan.parent:
        how.append(f"parent relationship: {table_plan.parent}")
    return (
        f"MySQL table **{source.name}.{table}**, replicated {strategy}"
        + (f" ({'; '.join(how)})" if how else "")
        + ".\n\n"
        + tier_schedule_table(source, plan, table_plan)
    )


def build_table_asset(
    source: Source,
    catalog: Catalog,
    plan: SourcePlan,
    table: str,
    graph: TableGraph,
    partitions_def: dg.PartitionsDefinition,
    warehouse_kind: str = "bigquery",
) -> dg.AssetsDefinition:
    table_plan = plan.tables[table]
    key = table_key(source.name, catalog, table)
    partitioned = is_partitioned(table_plan)
    spec = replicated_table(catalog, plan, table)
    not_drawn = [f"{parent}: {why}" for child, parent, why in graph.broken if child == table]
    deps = []
    for parent in graph.parents[table]:
        mapping = None
        if not partitioned and is_partitioned(plan.tables[parent]):
            mapping = dg.LastPartitionMapping()  # a snapshot follows its dated parent's latest day
        deps.append(dg.AssetDep(table_key(source.name, catalog, parent), partition_mapping=mapping))
    metadata = {
        "mysql_table": f"{source.name}.{table}",
        "strategy": table_plan.strategy,
        "tier": table_plan.tier,
        "chunk_rows": table_plan.chunk_rows,
        "warehouse_table": spec.warehouse_name,
        "dagster/column_schema": column_schema(spec, warehouse_kind),
    }
    if not_drawn:
        metadata["foreign_keys_not_drawn"] = dg.MetadataValue.md(
            "Relationships not drawn as graph edges (they would close a loop):\n\n"
            + "\n".join(f"- {line}" for line in not_drawn)
        )

    @dg.asset(
        key=key,
        deps=deps,
        group_name=group_name(source.name, graph.clusters[table]),
        kinds={"mysql", WAREHOUSE_KINDS.get(warehouse_kind, warehouse_kind)},
        tags={
            "plex_etl/source": tag_value(source.name),
            "plex_etl/tier": tag_value(table_plan.tier),
            "plex_etl/strategy": tag_value(table_plan.strategy),
        },
        pool=pool_name(source),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),  # loads are idempotent
        partitions_def=partitions_def if partitioned else None,
        backfill_policy=dg.BackfillPolicy.single_run() if partitioned else None,
        io_manager_key=IO_MANAGER_KEY,
        automation_condition=table_condition(source, plan, table_plan),
        freshness_policy=freshness_policy(table_plan),
        description=describe_table(source, plan, table_plan, table),
        metadata=metadata,
    )
    @only_transient_retried
    def _table_asset(context: dg.AssetExecutionContext, mysql: MySQLResource, warehouse: WarehouseResource):
        today = source_today(source)
        start, end = partition_days(context) if partitioned else (today, today)
        spec = replicated_table(catalog, plan, table, dataset=warehouse.dataset)
        lo, hi = read_bounds(spec, start, end, today)
        # Lazy: nothing is read until the IO manager consumes it (replicate_partition).
        return dg.Output(PartitionStream(mysql.source(source.name), spec, lo, hi, progress=context.log.info))

    return _table_asset


def build_source_assets(
    source: Source, catalog: Catalog, plan: SourcePlan, warehouse_kind: str = "bigquery"
) -> list[dg.AssetsDefinition]:
    graph = table_graph(catalog, plan)
    partitions_def = daily_partitions(source, plan)
    return [
        build_table_asset(source, catalog, plan, p.table, graph, partitions_def, warehouse_kind)
        for p in sorted(plan.included, key=lambda p: p.table)
    ]
