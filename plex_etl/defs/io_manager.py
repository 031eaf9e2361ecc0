"""The IO manager that streams a partition's record batches into the warehouse."""

import datetime as dt

import dagster as dg

from plex_etl.defs.resources import WarehouseResource
from plex_etl.extract.stream import PartitionStream
from plex_etl.typemap import FIXES
from plex_etl.warehouse.base import PARTITION_COLUMN, LoadResult, Warehouse


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


def load_metadata(stream: PartitionStream, result: LoadResult, kind: str) -> dict:
    seconds = max(result.seconds, stream.seconds, 1e-9)
    metadata: dict = {
        "rows": dg.IntMetadataValue(result.rows),
        "dagster/row_count": dg.IntMetadataValue(result.rows),
        "mysql_snapshot_rows": dg.IntMetadataValue(stream.expected_rows),
        "bytes": dg.IntMetadataValue(result.bytes),
        "chunks": dg.IntMetadataValue(result.chunks),
        "seconds": dg.FloatMetadataValue(round(seconds, 3)),
        "rows_per_second": dg.FloatMetadataValue(round(result.rows / seconds, 1)),
        "warehouse": dg.TextMetadataValue(kind),
        "warehouse_table": dg.TextMetadataValue(stream.spec.target.qualified_name),
        "partitions": dg.TextMetadataValue(f"{stream.start}..{stream.end}"),
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
        mode = "upsert" if spec.plan.strategy == "upsert" else "replace"
        result = warehouse.load(spec.target, obj, obj.start, obj.end, mode=mode)
        metadata = load_metadata(obj, result, warehouse.kind)
        if spec.plan.strategy == "snapshot":
            metadata["snapshot_rows_expired"] = dg.IntMetadataValue(keep_snapshots(warehouse, obj))
        context.add_output_metadata(metadata)

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
        target.dataset,
        f"{target.name}_latest",
        f"SELECT * FROM {target.dataset}.{target.name} WHERE {PARTITION_COLUMN} = "
        f"(SELECT MAX({PARTITION_COLUMN}) FROM {target.dataset}.{target.name})",
    )
    return expired
