"""Warehouse protocol and its implementations: BigQuery and the local DuckDB warehouse.

`BigQueryWarehouse` / `bigquery_client` and `LocalWarehouse` are imported lazily
(google-cloud-bigquery and duckdb are only needed when that warehouse is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plex_etl.warehouse.base import (
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    LoadMode,
    LoadResult,
    TargetTable,
    Warehouse,
    WarehouseColumn,
    WarehouseError,
)

if TYPE_CHECKING:
    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client
    from plex_etl.warehouse.local import LocalWarehouse

__all__ = [
    "LOADED_AT_COLUMN",
    "PARTITION_COLUMN",
    "BigQueryWarehouse",
    "LoadMode",
    "LoadResult",
    "LocalWarehouse",
    "TargetTable",
    "Warehouse",
    "WarehouseColumn",
    "WarehouseError",
    "bigquery_client",
]


def __getattr__(name: str) -> Any:
    if name in ("BigQueryWarehouse", "bigquery_client"):
        from plex_etl.warehouse import bigquery

        return getattr(bigquery, name)
    if name == "LocalWarehouse":
        from plex_etl.warehouse.local import LocalWarehouse

        return LocalWarehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
