"""Warehouse protocol and its implementations: BigQuery and the local DuckDB warehouse.

`BigQueryWarehouse` / `bigquery_client` are imported lazily (google-cloud-bigquery is
only needed when that warehouse is used).
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
from plex_etl.warehouse.local import LocalWarehouse

if TYPE_CHECKING:
    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client

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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
