"""The asset factory: one partitioned asset per replicated table of a source's catalog."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from plex_etl.catalog.graph import TableGraph, table_graph
from plex_etl.catalog.model import Catalog
from plex_etl.catalog.naming import group_name, tag_value
from plex_etl.catalog.plan import SourcePlan
from plex_etl.defs.automation import freshness_policy, table_condition
from plex_etl.defs.checks import row_count_check, schema_check, table_check_specs
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, WarehouseResource
from plex_etl.extract.spec import read_bounds, replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.sources import Source

IO_MANAGER_KEY = "warehouse_io_manager"


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


def build_table_asset(
    source: Source,
    catalog: Catalog,
    plan: SourcePlan,
    table: str,
    graph: TableGraph,
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    table_plan = plan.tables[table]
    key = table_key(source.name, catalog, table)
    broken = [f"{parent}: {why}" for child, parent, why in graph.broken if child == table]
    description = (
        f"MySQL `{source.name}.{table}` replicated by day ({table_plan.strategy}"
        + (f" on {', '.join(table_plan.partition_columns)}" if table_plan.partition_columns else "")
        + (f" via {table_plan.parent}" if table_plan.parent else "")
        + ")."
    )

    @dg.asset(
        key=key,
        deps=[table_key(source.name, catalog, p) for p in graph.parents[table]],
        group_name=group_name(source.name, graph.clusters[table]),
        kinds={"mysql", "bigquery"},
        tags={
            "plex_etl/source": tag_value(source.name),
            "plex_etl/tier": tag_value(table_plan.tier),
            "plex_etl/strategy": tag_value(table_plan.strategy),
        },
        pool=pool_name(source),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),  # loads are idempotent
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=IO_MANAGER_KEY,
        check_specs=table_check_specs(key),
        automation_condition=table_condition(source, plan, table_plan),
        freshness_policy=freshness_policy(table_plan),
        description=description,
        metadata={
            "mysql_table": f"{source.name}.{table}",
            "strategy": table_plan.strategy,
            "tier": table_plan.tier,
            "chunk_rows": table_plan.chunk_rows,
            "dependency_cycles_broken": "\n".join(broken) or "none",
        },
    )
    def _table_asset(
        context: dg.AssetExecutionContext, mysql: MySQLResource, warehouse: WarehouseResource
    ):
        start, end = partition_days(context)
        today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
        if table_plan.strategy == "snapshot" and (start, end) != (today, today):
            raise dg.Failure(
                f"{source.name}.{table} is replicated as a snapshot (the table as it is now): "
                f"only today's partition ({today}) can be materialized, not {start}..{end}",
                allow_retries=False,
            )
        spec = replicated_table(catalog, plan, table, dataset=warehouse.dataset)
        lo, hi = read_bounds(spec, start, end, today)
        stream = PartitionStream(mysql.source(source.name), spec, lo, hi, progress=context.log.info)
        yield dg.Output(stream)
        # The IO manager has consumed the stream and swapped the rows in by now.
        store = warehouse.get()
        yield schema_check(store, spec)
        yield row_count_check(store, stream)

    return _table_asset


def build_source_assets(source: Source, catalog: Catalog, plan: SourcePlan) -> list[dg.AssetsDefinition]:
    graph = table_graph(catalog, plan)
    partitions_def = daily_partitions(source, plan)
    return [
        build_table_asset(source, catalog, plan, p.table, graph, partitions_def)
        for p in sorted(plan.included, key=lambda p: p.table)
    ]
