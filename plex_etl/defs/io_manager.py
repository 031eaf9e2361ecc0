"""The IO manager that streams a partition's record batches into the warehouse."""

import datetime as dt

import dagster as dg

from plex_etl.defs.resources import WarehouseResource
from plex_etl.extract.spec import load_mode
from plex_etl.extract.stream import PartitionStream, describe_days
from plex_etl.typemap import FIXES
from plex_etl.warehouse.base import LoadResult, Warehouse
from plex_etl.warehouse.queries import latest_view_sql


def column_schema(stream: PartitionStream) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.bigquery_type,
                description=f"MySQL {col.column_type}",
                constraints=dg.TableColumnConstraints(nullable=col.nullable),
            )
            for c, col in zip(stream.spec.target.columns, stream.spec.table.columns, strict=True)
        ]
    )


def per_partition(counts: dict[dt.date, int], keys: list[str]) -> dict[str, int]:
    """Rows per partition key of a run; days beyond the run's first or last partition (the
    undated and early rows of the first partition, the future-dated ones of today) count for it."""
    days = [dt.date.fromisoformat(k) for k in keys]
    rows = dict.fromkeys(keys, 0)
    for day, n in counts.items():
        key = min(max(day, days[0]), days[-1]).isoformat()
        rows[key] = rows.get(key, 0) + n
    return rows


def partition_metadata(stream: PartitionStream, result: LoadResult, keys: list[str]) -> dict[str, dict]:
    """Each partition's own figures (a range run lands several days in one load)."""
    landed = per_partition(dict(result.rows_by_partition), keys)
    mysql = per_partition(stream.snapshot_counts, keys)
    return {
        key: {
            "rows": dg.IntMetadataValue(landed[key]),
            "dagster/row_count": dg.IntMetadataValue(landed[key]),
            "mysql_snapshot_rows": dg.IntMetadataValue(mysql[key]),
        }
        for key in keys
    }


def load_metadata(stream: PartitionStream, result: LoadResult, kind: str) -> dict:
    """Figures of the whole load (the run's range); per-partition counts come on top."""
    seconds = max(result.seconds, stream.seconds, 1e-9)
    metadata: dict = {
        "rows": dg.IntMetadataValue(result.rows),
        "dagster/row_count": dg.IntMetadataValue(result.rows),
        "mysql_snapshot_rows": dg.IntMetadataValue(stream.expected_rows),
        "load_rows": dg.IntMetadataValue(result.rows),
        "load_bytes": dg.IntMetadataValue(result.bytes),
        "chunks": dg.IntMetadataValue(result.chunks),
        "seconds": dg.FloatMetadataValue(round(seconds, 3)),
        "rows_per_second": dg.FloatMetadataValue(round(result.rows / seconds, 1)),
        "warehouse": dg.TextMetadataValue(kind),
        "warehouse_table": dg.TextMetadataValue(stream.spec.target.qualified_name),
        "load_days": dg.TextMetadataValue(describe_days(stream.start, stream.end)),
        "dagster/column_schema": column_schema(stream),
    }
    if result.added_columns:
        metadata["added_columns"] = dg.TextMetadataValue(", ".join(result.added_columns))
    for fix in sorted(FIXES):
        metadata[f"fix/{fix}"] = dg.IntMetadataValue(stream.fixes.get(fix, 0))
    return metadata


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Consumes the asset's PartitionStream chunk by chunk; the warehouse swaps it in atomically."""

    warehouse: dg.ResourceDependency[WarehouseResource]

    def handle_output(self, context: dg.OutputContext, obj: PartitionStream) -> None:
        if not isinstance(obj, PartitionStream):
            raise dg.Failure(f"{context.asset_key.to_user_string()}: expected a PartitionStream")
        warehouse: Warehouse = self.warehouse.get()
        spec = obj.spec
        try:
            result = warehouse.load(spec.target, obj, obj.start, obj.end, mode=load_mode(spec))
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
            # A stopped run (SIGTERM, Ctrl-C, a terminated run) fails now: with the retry policy
            # Dagster would otherwise schedule the interrupted step again after its delay.
            raise dg.Failure(f"{context.asset_key.to_user_string()}: interrupted", allow_retries=False) from exc
        metadata = load_metadata(obj, result, warehouse.kind)
        if spec.plan.strategy == "snapshot":
            metadata["snapshot_rows_expired"] = dg.IntMetadataValue(keep_snapshots(warehouse, obj))
        context.add_output_metadata(metadata)
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            for key, figures in partition_metadata(obj, result, list(context.asset_partition_keys)).items():
                context.step_context.add_asset_metadata(figures, partition_key=key)

    def load_input(self, context: dg.InputContext) -> None:
        raise dg.Failure(
            f"{context.asset_key.to_user_string()} lives in the warehouse: query it there "
            "(downstream assets depend on it with deps=, not as an input)"
        )


def keep_snapshots(warehouse: Warehouse, stream: PartitionStream) -> int:
    """Expire snapshots beyond the retention window and (re)create the `<table>_latest` view."""
    target = stream.spec.target
    cutoff = stream.end - dt.timedelta(days=stream.spec.retention_days)
    expired = warehouse.delete_partitions_before(target.dataset, target.name, cutoff)
    warehouse.create_view(
        target.dataset, f"{target.name}_latest", latest_view_sql(target.dataset, target.name, stream.end)
    )
    return expired
