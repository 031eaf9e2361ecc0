"""The asset factory: one asset per replicated table of a source's catalog.

Dated tables (event, child, upsert) are daily-partitioned over a rolling window: partition D
holds the rows of day D, and the first partition also holds the whole history before it (and
the undated rows), each row keeping its own day in the warehouse (docs/design-notes.md,
"History"). Snapshot tables have no partitions: each materialization reads the whole table as
it is now and lands it as today's snapshot (the warehouse keeps one per day, see
docs/design-notes.md, "Snapshot assets"). Dated tables depend on snapshot tables without a
per-day mapping, so a past day never waits for a snapshot that cannot exist.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from plex_etl import waits
from plex_etl.catalog.drift import SchemaDriftError
from plex_etl.catalog.graph import TableGraph, table_graph
from plex_etl.catalog.model import Catalog
from plex_etl.catalog.naming import group_name, tag_value
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.defs.automation import freshness_policy, table_condition, tier_cadence, tier_schedule
from plex_etl.defs.cdc import CAPTURE_FRESHNESS, CAPTURE_TAG, capture_schedule, describe_captured
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, WarehouseResource
from plex_etl.defs.retries import only_transient_retried
from plex_etl.extract.spec import (
    ReplicatedTable,
    live_replicated_table,
    narrow_bounds,
    new_key_column,
    parse_days,
    read_bounds,
    replicated_table,
)
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import raw_connection
from plex_etl.sources import Source

IO_MANAGER_KEY = "warehouse_io_manager"
WAREHOUSE_KINDS = {"bigquery": "bigquery", "local": "duckdb"}  # the warehouse kind -> Dagster kind tag


def pool_name(source: Source) -> str:
    return f"mysql_{source.name}"


def daily_partitions(source: Source, plan: SourcePlan, today: dt.date | None = None) -> dg.DailyPartitionsDefinition:
    """Days in the source's time zone from the plan's first partition (the rolling window's
    start, which also holds all history) to today included (its rows keep arriving until
    midnight)."""
    first = plan.first_partition(today or source_today(source))
    return dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone=source.time_zone, end_offset=1)


class TableLoadConfig(dg.Config):
    """Run config of a table's load: by default every day of the run's partitions."""

    days: str = Field(
        default="",
        description="Only these days of the run's partitions, as YYYY-MM-DD or YYYY-MM-DD...YYYY-MM-DD: "
        "e.g. days of history (inside the first partition) that `plex-etl reconcile` found different, "
        "reloaded without re-reading the rest of the history. Empty: every day the partitions hold.",
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


def _dates(columns: tuple[str, ...]) -> str:
    return ", else ".join(columns)


def describe_table(source: Source, spec: ReplicatedTable) -> str:
    """What the table is and when it refreshes, in plain sentences: Dagster shows a description
    as Markdown on the asset's page, but as raw text in the asset list and only its first line in
    the lineage graph. The schedule in detail is in the asset's metadata (`tier_schedule`)."""
    table_plan = spec.plan
    if table_plan.strategy == "child":
        root = spec.hops[-1].table.name
        how = f"by day of its {spec.hops[0].table.name} row ({root}.{_dates(spec.dated.partition_columns)})"
    elif table_plan.strategy == "upsert":
        how = f"by day of its last change ({_dates(table_plan.partition_columns)}), merged by key"
    elif table_plan.strategy == "event":
        how = f"by day of {_dates(table_plan.partition_columns)}"
    else:
        how = "whole, as a daily snapshot"
    return (
        f"MySQL table {source.name}.{spec.name}, loaded {how}.\n\n"
        f"Tier {table_plan.tier}: refreshed {tier_cadence(table_plan.tier)} ({source.time_zone}); "
        "the schedule, partitions and freshness are in the metadata."
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
    chain = {hop.table.name for hop in spec.hops}  # the parents whose day is this table's day
    deps = []
    for parent in graph.parents[table]:
        mapping = None
        if partitioned and is_partitioned(plan.tables[parent]) and parent not in chain:
            # Its rows' days are not this table's: a day-to-day dependency would make the UI warn
            # "upstream data missing" for any past day of this table whose day of the parent is not
            # loaded, which says nothing about this table's rows. The orphan check judges it.
            not_drawn.append(f"{parent}: a dated table whose days are not this table's days (its rows are "
                             "referenced whatever their day); the orphan check judges the relationship")
            continue
        if not partitioned and is_partitioned(plan.tables[parent]):
            mapping = dg.LastPartitionMapping()  # a snapshot follows its dated parent's latest day
        deps.append(dg.AssetDep(table_key(source.name, catalog, parent), partition_mapping=mapping))
    # A captured table (`capture: binlog`) is kept current by the capture worker: no polling
    # automation (a reload racing a change batch could land an older row), the capture's
    # freshness policy and description. A manual materialization stays possible (prefer a resync).
    captured = table_plan.capture == "binlog"
    metadata = {
        "mysql_table": f"{source.name}.{table}",
        "strategy": table_plan.strategy,
        "tier": table_plan.tier,
        "chunk_rows": table_plan.chunk_rows,
        "warehouse_table": spec.warehouse_name,
        # How the table is kept current: its tier's schedule, or, captured, the capture worker's.
        **(capture_schedule(source, table) if captured else tier_schedule(source, plan, table_plan)),
        "dagster/column_schema": column_schema(spec, warehouse_kind),
    }
    if not_drawn:
        metadata["foreign_keys_not_drawn"] = dg.MetadataValue.md(
            "Relationships not drawn as graph edges:\n\n"
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
            CAPTURE_TAG: tag_value(table_plan.capture),  # poll, or binlog (change capture)
        },
        pool=pool_name(source),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),  # loads are idempotent
        partitions_def=partitions_def if partitioned else None,
        backfill_policy=dg.BackfillPolicy.single_run() if partitioned else None,
        io_manager_key=IO_MANAGER_KEY,
        automation_condition=None if captured else table_condition(source, plan, table_plan),
        freshness_policy=CAPTURE_FRESHNESS if captured else freshness_policy(table_plan),
        description=describe_captured(source, table) if captured else describe_table(source, spec),
        metadata=metadata,
    )
    @only_transient_retried
    def _table_asset(context: dg.AssetExecutionContext, config: TableLoadConfig, mysql: MySQLResource,
                     warehouse: WarehouseResource):
        today = source_today(source)
        spec = live_spec(mysql, source, catalog, plan, table, warehouse.dataset, context.log)
        if partitioned:
            first = dt.date.fromisoformat(partitions_def.get_first_partition_key())
            lo, hi = read_bounds(spec, *partition_days(context), today, first)
        else:
            lo, hi = read_bounds(spec, today, today, today, today)
        if config.days:
            try:
                lo, hi = narrow_bounds(spec, (lo, hi), parse_days(config.days), today)
            except ValueError as exc:
                raise dg.Failure(str(exc), allow_retries=False) from None
        above = high_water_key(warehouse, spec, lo, hi)
        # Lazy: nothing is read until the IO manager consumes it (replicate_partition).
        return dg.Output(PartitionStream(mysql.source(source.name), spec, lo, hi, new_keys_above=above,
                                         progress=context.log.info))

    return _table_asset


def live_spec(mysql: MySQLResource, source: Source, catalog: Catalog, plan: SourcePlan, table: str, dataset: str,
              log: "dg.DagsterLogManager") -> ReplicatedTable:
    """The table as MySQL has it now (catalog/drift.py): a column added in MySQL is replicated
    from this load on, a dropped one is no longer read, without waiting for `discover`. A table
    or a column the read needs that MySQL no longer has fails the load at once (no retry),
    naming it and what to do."""
    server = mysql.source(source.name)

    def read() -> ReplicatedTable:
        # mysqlclient: a few milliseconds to connect, where PyMySQL (mysql.connect) takes ~100 ms.
        connection = raw_connection(server)
        try:
            return live_replicated_table(connection, catalog, plan, table, dataset)
        finally:
            connection.close()

    try:
        # Waited for in slices (SIGTERM stops the step at once) and given up after the source's
        # timeouts; an abandoned read closes its own connection once the driver gives up.
        spec = waits.call(read, what=f"{source.name}.{table}: reading the table's structure from MySQL "
                          f"{server.describe()}", limit=server.connect_timeout + server.read_timeout)
    except SchemaDriftError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    for line in spec.drift.describe():
        log.warning(f"{source.name}.{table}: {line} (run `plex-etl discover --source {source.name}` so the "
                    "committed catalog records it)")
    return spec


def high_water_key(warehouse: WarehouseResource, spec: ReplicatedTable, lo: dt.date | None,
                   hi: dt.date | None) -> int | None:
    """The largest key the warehouse holds, when a read of [lo, hi] should also take every row
    with a larger key whatever its date (see extract.sql.partition_query): a row inserted
    since the last load but dated outside the days read (back-dated, undated, or older than
    the window) lands at the next tick instead of waiting for reconciliation."""
    column = new_key_column(spec)
    if column is None or (lo is None and hi is None):
        return None  # no single integer key, or the read takes every row anyway
    return warehouse.get().max_key(spec.target.dataset, spec.target.name, spec.primary_key[0])


def build_source_assets(
    source: Source, catalog: Catalog, plan: SourcePlan, warehouse_kind: str = "bigquery", today: dt.date | None = None,
) -> list[dg.AssetsDefinition]:
    """`today` (default: now in the source's time zone) places the rolling window of partitions."""
    graph = table_graph(catalog, plan)
    partitions_def = daily_partitions(source, plan, today)
    return [
        build_table_asset(source, catalog, plan, p.table, graph, partitions_def, warehouse_kind)
        for p in sorted(plan.included, key=lambda p: p.table)
    ]
