"""What a warehouse must do for plex_etl, whatever it is (BigQuery or the local DuckDB one).

Every replicated table lands as one warehouse table with the catalog's mapped columns
plus two bookkeeping columns: `_etl_partition_date` (the Dagster partition the row
belongs to; the table is partitioned by it) and `_etl_loaded_at` (when it landed).

A load consumes a stream of Arrow record batches chunk by chunk into a staging area;
only once the stream is exhausted does one atomic step make the rows visible:
- mode "replace": delete the target rows whose partition date is in the loaded range,
  insert the staged rows;
- mode "upsert": the same, and also delete target rows (in any partition) whose
  primary key is among the staged rows, so a key is never duplicated (a key staged
  twice in one load lands once: the row with the latest partition date). With
  `merge_outside`, staged rows may also be dated outside [start, end] (new keys read
  whatever their day): those days are not replaced, their rows are only merged by key.
If the stream raises, or the final step fails, the target is left exactly as before and
the staging area is dropped.

Table layout: the data columns (all NULLABLE in the warehouse: nullability is the
source's business, and a relaxed MySQL column must not break loads), then
`_etl_partition_date DATE NOT NULL`, then `_etl_loaded_at TIMESTAMP`. Columns added
later by schema evolution (present in the TargetTable, missing in the warehouse) are
appended after them as NULLABLE, so earlier rows read NULL. A changed type of an
existing column is never applied automatically: the load raises WarehouseError.
(BigQuery cannot add columns inside a transaction: there the columns are added just
before it, and stay if the transaction then fails; they only hold NULLs.)

Columns the warehouse table has but the TargetTable lacks are *retired* (dropped in MySQL, or
from the catalog): a load never writes them, and keeps their history. Where the table has a
primary key, a row the load replaces (same key, in the days it replaces or, for upsert, in any
day) hands its retired values to the row that replaces it, in the same atomic step: a reload of
a past day keeps them; a new row holds NULL. Without a primary key a replaced row has no
successor to hand them to: the reloaded days hold NULL there (`LoadResult.retired_columns`).

Every batch must carry partition dates within [start, end] (unless `merge_outside`); otherwise the load raises
WarehouseError naming the table and the date, and the target is not touched. `start` or
`end` None leaves that side of the range open: the load of the first partition replaces
every earlier day too, the load of today every later day (rows dated in the future).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from plex_etl.errors import TransientError

if TYPE_CHECKING:
    import pyarrow as pa

    from plex_etl.canonical import RowDigest, Scope

# pyarrow is imported where record batches are handled, not by this module: the code
# location imports it (through the table specs) but moves no data when it loads.

PARTITION_COLUMN = "_etl_partition_date"
LOADED_AT_COLUMN = "_etl_loaded_at"

LoadMode = Literal["replace", "upsert"]


LOAD_MODES: tuple[str, ...] = ("replace", "upsert")


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message names the table (`dataset.table`)."""


class WarehouseSettingsError(WarehouseError, ValueError):
    """Partial or contradictory warehouse settings; the message names each one."""


class WarehouseValueError(WarehouseError, ValueError):
    """A value the warehouse cannot hold; the message names table, column and value."""


class WarehouseTimeout(WarehouseError, TransientError):
    """A wait for the warehouse ran out (a file lock another process held, a job still running):
    another attempt may not meet it."""


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
        import pyarrow as pa

        fields = [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        return pa.schema([*fields, pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)])


@dataclass(frozen=True)
class LoadResult:
    rows: int  # rows staged and landed
    bytes: int  # Parquet bytes staged
    chunks: int  # non-empty record batches consumed
    seconds: float
    rows_by_partition: Mapping[dt.date, int] = field(default_factory=dict)  # from the batches
    added_columns: tuple[str, ...] = ()  # columns added to the warehouse table by this load
    # Columns the table has but the load does not write (dropped in MySQL: retired). Each replaced
    # row keeps its value there, matched by primary key (see `retired_columns`).
    retired_columns: tuple[str, ...] = ()


class Warehouse(Protocol):
    """The operations the IO manager, checks and views need."""

    kind: str

    def load(
        self,
        target: TargetTable,
        batches: Iterable[pa.RecordBatch],
        start: dt.date | None,
        end: dt.date | None,
        mode: LoadMode = "replace",
        merge_outside: bool = False,
    ) -> LoadResult:
        """Stage every batch, then atomically replace partitions [start, end] (inclusive; None: open)."""
        ...

    def max_key(self, dataset: str, table: str, column: str) -> int | None:
        """The largest value of an integer key column (None: no table or no rows)."""
        ...

    def columns(self, dataset: str, table: str) -> dict[str, str] | None:
        """Column name -> warehouse type of an existing table, in order; None if absent.

        Includes the bookkeeping columns. Types are spelled like WarehouseColumn's
        `bigquery_type` ("NUMERIC(20, 0)") or, locally, DuckDB's canonical names
        ("DECIMAL(20,0)", "VARCHAR", "TIMESTAMP WITH TIME ZONE").
        """
        ...

    def normalize_type(self, type_name: str) -> str:
        """The one canonical spelling of a column type in this warehouse, as `columns` reports it
        (aliases resolved, spacing fixed): two spellings are the same type iff they normalize equal."""
        ...

    def count_by_partition(
        self, dataset: str, table: str, start: dt.date | None, end: dt.date | None
    ) -> dict[dt.date, int]:
        """Rows per partition date in [start, end] (None: open; dates without rows are omitted)."""
        ...

    def digests(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> dict[Any, Digest]:
        """Per day of the whole table (`scope.day` None), or per key-hash bucket of one day: rows
        and the sums of key and row hashes (canonical.digest_sql). `absent`: columns of `digest`
        the table lacks, compared as NULL. A missing table gives {}."""
        ...

    def canonical_rows(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> list[tuple]:
        """The rows of one day's key-hash buckets with their canonical fields (canonical.rows_sql)."""
        ...

    def query(self, sql: str) -> pa.Table:
        """Run a query written for this warehouse and return the rows."""
        ...

    def delete_partitions_before(self, dataset: str, table: str, before: dt.date) -> int:
        """Delete rows of partitions older than `before` (snapshot retention); rows deleted.

        A missing table deletes nothing (returns 0).
        """
        ...

    def create_view(self, dataset: str, name: str, sql: str) -> None:
        """Create or replace a view from a query written for this warehouse."""
        ...


@dataclass(frozen=True)
class Digest:
    """Rows of one day (or key-hash bucket) and two order-independent hashes: the sum of the
    first 60 bits of the MD5 of each row's key text, and of each row's canonical text (every
    replicated column, plex_etl/canonical.py). MySQL and every warehouse compute the same
    figures, so equal digests mean the same keys holding the same values (exact integer sums: a
    duplicated row and a missing one never cancel out)."""

    rows: int
    keys: int = 0
    values: int = 0


# ---------------------------------------------------------------------------------------
# Helpers shared by the implementations (not part of the protocol).


def day_range(column: str, start: dt.date | None, end: dt.date | None) -> str:
    """SQL condition `column` in [start, end], None leaving a side open (BigQuery and DuckDB)."""
    parts = []
    if start is not None:
        parts.append(f"{column} >= DATE '{start.isoformat()}'")
    if end is not None:
        parts.append(f"{column} <= DATE '{end.isoformat()}'")
    return " AND ".join(parts) or "TRUE"


def retired_columns(existing: Iterable[str], target: TargetTable) -> tuple[str, ...]:
    """The columns of an existing warehouse table that a load of `target` does not write."""
    written = {c.name for c in target.columns} | {PARTITION_COLUMN, LOADED_AT_COLUMN}
    return tuple(c for c in existing if c not in written)


def check_mode(target: TargetTable, mode: str, merge_outside: bool = False) -> None:
    if mode not in LOAD_MODES:
        raise WarehouseError(f"{target.qualified_name}: unknown load mode {mode!r}")
    if mode == "upsert" and not target.primary_key:
        raise WarehouseError(f"{target.qualified_name}: mode 'upsert' needs a primary key")
    if merge_outside and mode != "upsert":
        raise WarehouseError(f"{target.qualified_name}: rows outside the loaded days can only be merged by key")
    names = {c.name for c in target.columns}
    missing = [k for k in target.primary_key if k not in names]
    if missing:
        raise WarehouseError(
            f"{target.qualified_name}: primary key column(s) {missing} are not table columns"
        )
    for reserved in (PARTITION_COLUMN, LOADED_AT_COLUMN):
        if reserved in names:
            raise WarehouseError(
                f"{target.qualified_name}: column {reserved} is reserved for bookkeeping"
            )


class BatchStream:
    """Checks and conforms the record batches of one load, counting rows per partition.

    Iterating yields each non-empty batch cast to `target.arrow_schema` (columns matched
    by name). A batch whose partition dates are NULL, or fall outside [start, end] unless
    `merge_outside`, raises WarehouseError naming the table and the date.
    """

    def __init__(
        self,
        target: TargetTable,
        batches: Iterable[pa.RecordBatch],
        start: dt.date | None,
        end: dt.date | None,
        merge_outside: bool = False,
    ) -> None:
        if start is not None and end is not None and start > end:
            raise WarehouseError(f"{target.qualified_name}: start {start} is after end {end}")
        self.target = target
        self.schema = target.arrow_schema
        self.start = start
        self.end = end
        self.merge_outside = merge_outside
        self._batches = batches
        self.rows = 0
        self.chunks = 0
        self.rows_by_partition: dict[dt.date, int] = {}

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in self._batches:
            if isinstance(batch, pa.Table):
                for b in batch.to_batches():
                    if b.num_rows:
                        yield self._accept(b)
            elif batch.num_rows:
                yield self._accept(batch)

    def _accept(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = self._conform(batch)
        self._check_partitions(batch)
        self.rows += batch.num_rows
        self.chunks += 1
        return batch

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa

        if batch.schema.equals(self.schema, check_metadata=False):
            return batch
        present = set(batch.schema.names)
        missing = [n for n in self.schema.names if n not in present]
        extra = [n for n in batch.schema.names if n not in set(self.schema.names)]
        if missing or extra:
            raise WarehouseError(
                f"{self.target.qualified_name}: record batch columns do not match the table "
                f"(missing {missing}, unexpected {extra})"
            )
        arrays = [batch.column(n) for n in self.schema.names]
        try:
            arrays = [
                a if a.type == f.type else a.cast(f.type)
                for a, f in zip(arrays, self.schema, strict=True)
            ]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise WarehouseError(
                f"{self.target.qualified_name}: record batch types do not match the table: {e}"
            ) from e
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _check_partitions(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc

        dates = batch.column(PARTITION_COLUMN)
        if dates.null_count:
            raise WarehouseError(
                f"{self.target.qualified_name}: record batch has NULL {PARTITION_COLUMN}"
            )
        for item in pc.value_counts(dates).to_pylist():
            day, n = item["values"], item["counts"]
            outside = (self.start is not None and day < self.start) or (self.end is not None and day > self.end)
            if outside and not self.merge_outside:
                raise WarehouseError(
                    f"{self.target.qualified_name}: record batch has partition date {day} "
                    f"outside the loaded range [{self.start}, {self.end}]"
                )
            self.rows_by_partition[day] = self.rows_by_partition.get(day, 0) + n


def decimal_text(values: pa.Array) -> pa.Array:
    """Exact plain text of a decimal array ('-12.50', '0.000001', never '1E-6').

    Arrow prints small scaled values in exponent notation; those few are re-printed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(values, pa.string())
    mask = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(mask).as_py():
        return text
    plain = [format(v, "f") for v in pc.filter(values, mask).to_pylist()]
    return pc.replace_with_mask(text, mask, pa.array(plain, pa.string()))


def stage_array(values: pa.Array, staged: pa.DataType) -> pa.Array:
    """`values` as the staged type of its column: unchanged, decimal as exact text, or cast."""
    import pyarrow as pa

    if values.type == staged:
        return values
    if pa.types.is_decimal(values.type) and pa.types.is_string(staged):
        return decimal_text(values)
    return values.cast(staged)


# ---------------------------------------------------------------------------------------
# Change capture (plex_etl.cdc): a merge of changed rows and deleted keys per table, and the
# binary-log position each table has reached, committed in one transaction.

CDC_POSITIONS_TABLE = "_plex_etl_cdc_positions"


class PositionConflict(WarehouseError):
    """The stored position of a table is not the one the batch started from: another run
    applied changes meanwhile. Nothing was written."""


@dataclass(frozen=True)
class TableChanges:
    """One table's part of a change batch: rows to merge by primary key (schema: the target's
    `arrow_schema`) and keys to delete (the primary key columns only)."""

    target: TargetTable
    upserts: pa.Table
    deletes: pa.Table


@dataclass
class StagedChanges:
    """A change batch written to the warehouse's staging, not visible yet: `commit_changes`
    makes it visible with the positions in one transaction, `discard_changes` drops it. A
    batch can be staged while the previous one commits (the capture worker does)."""

    dataset: str
    changes: list[TableChanges]
    staging: list[Any] = field(default_factory=list)  # the warehouse's own (BigQuery: staging tables)


class ChangeWarehouse(Protocol):
    """What change capture needs of a warehouse besides `Warehouse`."""

    def stage_changes(self, dataset: str, changes: list[TableChanges]) -> StagedChanges:
        """Write the changes where `commit_changes` reads them; nothing is visible yet."""
        ...

    def commit_changes(
        self, stream: str, staged: StagedChanges, positions: Mapping[str, str], expected: Mapping[str, str | None]
    ) -> None:
        """In one transaction: for each table delete the rows whose key is in `deletes` or
        `upserts`, insert `upserts`, and store `positions` (table -> position text) for
        `stream` in the dataset's CDC_POSITIONS_TABLE. Raises PositionConflict, writing nothing,
        when a table's stored position is not `expected[table]` (None: no position). The
        staging is dropped either way."""
        ...

    def discard_changes(self, staged: StagedChanges) -> None:
        """Drop a staged batch that will not be committed."""
        ...

    def apply_changes(
        self,
        dataset: str,
        stream: str,
        changes: list[TableChanges],
        positions: Mapping[str, str],
        expected: Mapping[str, str | None],
    ) -> None:
        """`stage_changes` then `commit_changes`."""
        ...

    def cdc_positions(self, dataset: str, stream: str) -> dict[str, str]:
        """Table -> stored position text of `stream` ({} when none)."""
        ...

    def drop_cdc_position(self, dataset: str, stream: str, table: str) -> None:
        """Forget a table's position (it stops being captured, or is resynced)."""
        ...


def cdc_staging_table(table: pa.Table, target: TargetTable) -> pa.Table:
    """`table` conformed to the target's arrow schema (columns matched by name)."""
    import pyarrow as pa

    batches = list(BatchStream(target, [table], None, None))
    return pa.Table.from_batches(batches, target.arrow_schema)
