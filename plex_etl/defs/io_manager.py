"""The IO manager that streams a partition's record batches into the warehouse.

The hand-over is explicit: the asset returns a lazy `PartitionStream`; `handle_output` calls
the plain domain function `replicate_partition(warehouse, stream)` (plex_etl.replicate) and
records the `PartitionLoad` it returns as the materialization's metadata. The checks
(defs/checks.py) read their MySQL figures from that metadata, never from the stream object.
"""

import datetime as dt

import dagster as dg

from plex_etl.defs.resources import WarehouseResource
from plex_etl.defs.retries import retried_only_if_transient
from plex_etl.extract.stream import PartitionStream, describe_days
from plex_etl.replicate import PartitionLoad, replicate_partition
from plex_etl.typemap import FIXES

# Metadata keys the checks read back (see defs/checks.py).
MYSQL_COUNTS = "mysql_snapshot_counts"  # JSON {day: rows} of the read's MySQL snapshot
LOAD_FIRST_DAY = "load_first_day"  # ISO day, or "" when the range is open (first partition)
LOAD_LAST_DAY = "load_last_day"  # ISO day, or "" when the range is open (today)
# Rows read for their new keys but dated outside the loaded days: merged by key into their day.
MERGED_ELSEWHERE = "new_rows_merged_into_other_days"
SCHEMA_DRIFT = "schema_drift"  # JSON of catalog.drift.ColumnDrift: MySQL's columns against the catalog's


def within(day: dt.date, start: dt.date | None, end: dt.date | None) -> bool:
    """Whether `day` is in the loaded days [start, end] (None: open side)."""
    return (start is None or day >= start) and (end is None or day <= end)


def per_partition(counts: dict[dt.date, int], keys: list[str], start: dt.date | None,
                  end: dt.date | None) -> dict[str, int]:
    """Rows per partition key of a run. Days before the run's first partition count for it when
    the load's start is open (the first partition holds the history and the undated rows),
    days after its last partition for that one when the end is open (today holds the
    future-dated rows); other days outside the run (new keys merged by key where they belong,
    see extract.sql.partition_query) count for no partition of the run."""
    days = [dt.date.fromisoformat(k) for k in keys]
    rows = dict.fromkeys(keys, 0)
    for day, n in counts.items():
        if (day < days[0] and start is not None) or (day > days[-1] and end is not None):
            continue
        key = min(max(day, days[0]), days[-1]).isoformat()
        rows[key] = rows.get(key, 0) + n
    return rows


def partition_metadata(load: PartitionLoad, keys: list[str]) -> dict[str, dict]:
    """Each partition's own figures (a range run lands several days in one load)."""
    landed = per_partition(dict(load.load.rows_by_partition), keys, load.start, load.end)
    mysql = per_partition(dict(load.mysql_counts), keys, load.start, load.end)
    return {
        key: {
            "rows": dg.IntMetadataValue(landed[key]),
            "dagster/row_count": dg.IntMetadataValue(landed[key]),
            "mysql_snapshot_rows": dg.IntMetadataValue(mysql[key]),
        }
        for key in keys
    }


def load_metadata(load: PartitionLoad, kind: str) -> dict:
    """Figures of the whole load (the run's range); per-partition counts come on top."""
    result = load.load
    metadata: dict = {
        "rows": dg.IntMetadataValue(result.rows),
        "dagster/row_count": dg.IntMetadataValue(result.rows),
        "mysql_snapshot_rows": dg.IntMetadataValue(load.mysql_rows),
        MYSQL_COUNTS: dg.JsonMetadataValue({d.isoformat(): n for d, n in sorted(load.mysql_counts.items())}),
        LOAD_FIRST_DAY: dg.TextMetadataValue(load.start.isoformat() if load.start else ""),
        LOAD_LAST_DAY: dg.TextMetadataValue(load.end.isoformat() if load.end else ""),
        "load_rows": dg.IntMetadataValue(result.rows),
        "load_bytes": dg.IntMetadataValue(result.bytes),
        "chunks": dg.IntMetadataValue(result.chunks),
        "seconds": dg.FloatMetadataValue(round(load.seconds, 3)),
        "rows_per_second": dg.FloatMetadataValue(round(result.rows / load.seconds, 1)),
        "warehouse": dg.TextMetadataValue(kind),
        "warehouse_table": dg.TextMetadataValue(load.table),
        "load_days": dg.TextMetadataValue(describe_days(load.start, load.end)),
    }
    elsewhere = sum(n for day, n in load.mysql_counts.items() if not within(day, load.start, load.end))
    if elsewhere:
        metadata[MERGED_ELSEWHERE] = dg.IntMetadataValue(elsewhere)
    if result.added_columns:
        metadata["added_columns"] = dg.TextMetadataValue(", ".join(result.added_columns))
    drift = load.drift
    if not drift.empty:
        metadata[SCHEMA_DRIFT] = dg.JsonMetadataValue(drift.to_json())
        for name, columns in (("new_columns", [c.name for c in drift.added]), ("dropped_columns", drift.dropped),
                              ("skipped_columns", [c.name for c in drift.skipped])):
            if columns:
                metadata[name] = dg.TextMetadataValue(", ".join(columns))
    if result.retired_columns:
        metadata["retired_columns"] = dg.TextMetadataValue(", ".join(result.retired_columns))
        metadata["retired_history"] = dg.TextMetadataValue(
            "kept: each reloaded row keeps its values (matched by primary key)" if load.primary_key else
            "not kept for the reloaded days (no primary key to match rows by): they hold NULL there")
    if load.snapshot_rows_expired is not None:
        metadata["snapshot_rows_expired"] = dg.IntMetadataValue(load.snapshot_rows_expired)
    for fix in sorted(FIXES):
        metadata[f"fix/{fix}"] = dg.IntMetadataValue(load.fixes.get(fix, 0))
    return metadata


class WarehouseIOManager(dg.IOManager):
    """Hands the asset's PartitionStream to `replicate_partition`; records what it returns."""

    def __init__(self, warehouse: WarehouseResource) -> None:
        self.warehouse = warehouse

    def handle_output(self, context: dg.OutputContext, obj: PartitionStream) -> None:
        if not isinstance(obj, PartitionStream):
            raise dg.Failure(f"{context.asset_key.to_user_string()}: expected a PartitionStream")
        with retried_only_if_transient(context.asset_key.to_user_string()):
            store = self.warehouse.get()
            load = replicate_partition(store, obj)
        metadata = load_metadata(load, store.kind)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if len(keys) <= 1:
            context.add_output_metadata(metadata)
            return
        # A range run records one materialization per day, each with its day's figures. The
        # whole load's figures (with the per-day MySQL counts of the range, the history's
        # included) go on the last day's only, the one the checks read
        # (checks.run_materialization): on every day they would grow the run's events with the
        # square of its length. Per-partition metadata is the asset context's (the IO manager's
        # context only sets the whole output's); the asset's step is the one running here.
        asset_context = dg.AssetExecutionContext.get()
        for key, figures in partition_metadata(load, keys).items():
            asset_context.add_asset_metadata({**metadata, **figures} if key == keys[-1] else figures,
                                             partition_key=key)

    def load_input(self, context: dg.InputContext) -> None:
        raise dg.Failure(
            f"{context.asset_key.to_user_string()} lives in the warehouse: query it there "
            "(downstream assets depend on it with deps=, not as an input)"
        )


@dg.io_manager(required_resource_keys={"warehouse"}, description="streams each load into the warehouse resource")
def warehouse_io_manager(init_context: dg.InitResourceContext) -> WarehouseIOManager:
    """The IO manager on top of the `warehouse` resource (a top-level resource requirement, not a
    nested resource: nesting made Dagster warn `InitResourceContext.dagster_run is deprecated`)."""
    return WarehouseIOManager(init_context.resources.warehouse)
