"""What a warehouse must do for plex_etl, whatever it is (BigQuery or the local DuckDB one).

Every replicated table lands as one warehouse table with the catalog's mapped columns
plus two bookkeeping columns: `_etl_partition_date` (the Dagster partition the row
belongs to; the table is partitioned by it) and `_etl_loaded_at` (when it landed).

A load consumes a stream of Arrow record batches chunk by chunk into a staging area;
only once the stream is exhausted does one atomic step make the rows visible:
- mode "replace": delete the target rows whose partition date is in the loaded range,
  insert the staged rows;
- mode "upsert": the same, and also delete target rows (in any partition) whose
  primary key is among the staged rows, so a key is never duplicated.
If the stream raises, or the final step fails, the target is left exactly as before and
the staging area is dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import pyarrow as pa

PARTITION_COLUMN = "_etl_partition_date"
LOADED_AT_COLUMN = "_etl_loaded_at"

LoadMode = Literal["replace", "upsert"]


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message names the table."""


@dataclass(frozen=True)
class WarehouseColumn:
    name: str  # warehouse column name
    arrow_type: pa.DataType  # type of the column in the record batches
    bigquery_type: str  # e.g. "INT64", "NUMERIC(20, 0)", "STRING", "DATETIME"
    local_type: str  # DuckDB type, e.g. "BIGINT", "DECIMAL(20,0)", "VARCHAR", "TIMESTAMP"
    nullable: bool = True


@dataclass(frozen=True)
class TargetTable:
    """A warehouse table: `dataset.name`, its data columns (without bookkeeping columns)."""

    dataset: str
    name: str
    columns: tuple[WarehouseColumn, ...]
    primary_key: tuple[str, ...] = ()
    description: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.dataset}.{self.name}"

    @property
    def arrow_schema(self) -> pa.Schema:
        """Schema of the record batches a load receives: data columns, then the partition date."""
        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        return pa.schema([*fields, pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)])


@dataclass(frozen=True)
class LoadResult:
    rows: int
    bytes: int
    chunks: int
    seconds: float
    rows_by_partition: Mapping[dt.date, int] = field(default_factory=dict)
    added_columns: tuple[str, ...] = ()


class Warehouse(Protocol):
    """The operations the IO manager, checks and views need."""

    kind: str

    def load(
        self,
        target: TargetTable,
        batches: Iterable[pa.RecordBatch],
        start: dt.date,
        end: dt.date,
        mode: LoadMode = "replace",
    ) -> LoadResult:
        """Stage every batch, then atomically replace partitions [start, end] (inclusive)."""
        ...

    def columns(self, dataset: str, table: str) -> dict[str, str] | None:
        """Column name -> warehouse type of an existing table, in order; None if absent."""
        ...

    def count_by_partition(
        self, dataset: str, table: str, start: dt.date, end: dt.date
    ) -> dict[dt.date, int]:
        """Rows per partition date in [start, end] (dates without rows are omitted)."""
        ...

    def query(self, sql: str) -> pa.Table:
        """Run a query written for this warehouse and return the rows."""
        ...

    def delete_partitions_before(self, dataset: str, table: str, before: dt.date) -> int:
        """Drop rows of partitions older than `before` (snapshot retention); returns rows deleted."""
        ...

    def create_view(self, dataset: str, name: str, sql: str) -> None:
        """Create or replace a view from a query written for this warehouse."""
        ...
