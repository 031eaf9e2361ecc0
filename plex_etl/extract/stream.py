"""Stream the rows of a partition range out of MySQL as Arrow record batches.

One read-only transaction WITH CONSISTENT SNAPSHOT per stream: the per-day row counts
and the rows themselves come from the same snapshot, so the row-count check compares
like with like. Rows come through an unbuffered (server-side) cursor of the C driver
in small fetches, are converted column by column with the type map (vectorised), and
are grouped into record batches of the table's chunk size: memory is bounded by one
chunk whatever the table size. No LIMIT/OFFSET paging.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from plex_etl.extract.spec import ReplicatedTable
from plex_etl.extract.sql import partition_query
from plex_etl.mysql import raw_connection
from plex_etl.sources import Source
from plex_etl.typemap import ValueConversionError, convert

FETCH_ROWS = 8_192  # rows per driver fetch: Python objects for one fetch are all that is ever held


class ExtractionError(RuntimeError):
    """A partition could not be read; the message names source, table and, for values, column."""


class PartitionStream:
    """An iterable of record batches for partitions [start, end] of one table.

    Nothing touches MySQL until iteration starts. After (or during) iteration:
    `snapshot_counts` (rows per day, in the read's snapshot), `rows`, `chunks`, `fixes`.
    """

    def __init__(
        self,
        source: Source,
        spec: ReplicatedTable,
        start: dt.date,
        end: dt.date,
        progress: Callable[[str], None] | None = None,
        connect: Callable[[Source], Any] = raw_connection,
    ) -> None:
        self.source = source
        self.spec = spec
        self.start = start
        self.end = end
        self.query = partition_query(spec, start, end)
        self.schema = spec.target.arrow_schema
        self.snapshot_counts: dict[dt.date, int] = {}
        self.rows = 0
        self.chunks = 0
        self.fixes: Counter[str] = Counter()
        self.seconds = 0.0
        self._progress = progress
        self._connect = connect

    @property
    def label(self) -> str:
        days = self.start.isoformat() if self.start == self.end else f"{self.start}..{self.end}"
        return f"{self.spec.name} {days}"

    @property
    def expected_rows(self) -> int:
        return sum(self.snapshot_counts.values())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        started = time.perf_counter()
        connection = self._connect(self.source)
        try:
            connection.query("SET SESSION net_write_timeout = 3600, net_read_timeout = 3600")
            connection.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            connection.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            self.snapshot_counts = self._counts(connection)
            total_chunks = max(1, math.ceil(self.expected_rows / self.spec.plan.chunk_rows))
            connection.query(self.query.rows_sql)
            result = connection.use_result()
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            chunk_rows = self.spec.plan.chunk_rows
            while True:
                rows = result.fetch_row(maxrows=min(FETCH_ROWS, chunk_rows - pending_rows), how=0)
                if rows:
                    pending.append(self._to_batch(rows))
                    pending_rows += len(rows)
                if pending and (pending_rows >= chunk_rows or not rows):
                    table = pa.Table.from_batches(pending, self.schema).combine_chunks()
                    pending, pending_rows = [], 0
                    chunk = table.to_batches()[0]
                    self.rows += chunk.num_rows
                    self.chunks += 1
                    self.seconds = time.perf_counter() - started
                    self._report(total_chunks, chunk.num_rows)
                    yield chunk
                if not rows:
                    break
            connection.query("COMMIT")
        except Exception as exc:
            if isinstance(exc, ExtractionError):
                raise
            message = str(exc)
            raise ExtractionError(f"{self.source.name}.{self.label}: {message}") from exc
        finally:
            connection.close()
            self.seconds = time.perf_counter() - started

    def _counts(self, connection: Any) -> dict[dt.date, int]:
        connection.query(self.query.count_sql)
        counts: dict[dt.date, int] = {}
        for day, rows in connection.store_result().fetch_row(maxrows=0, how=0):
            if day is not None and int(rows):
                counts[dt.date.fromisoformat(day.decode())] = int(rows)
        return counts

    def _to_batch(self, rows: tuple[tuple[bytes | None, ...], ...]) -> pa.RecordBatch:
        values = list(zip(*rows, strict=True))
        arrays = []
        for column, mapped, raw in zip(self.spec.table.columns, self.spec.mapped, values, strict=False):
            try:
                array, fixes = convert(pa.array(raw, type=pa.binary()), mapped, column.name)
            except ValueConversionError as exc:
                raise ExtractionError(f"{self.source.name}.{self.spec.name}: {exc}") from None
            self.fixes.update(fixes)
            arrays.append(array)
        day = pa.array(values[-1], type=pa.binary()).cast(pa.string())
        arrays.append(pc.cast(day, pa.date32()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _report(self, total_chunks: int, chunk_rows: int) -> None:
        if self._progress is None:
            return
        rate = self.rows / self.seconds if self.seconds else 0.0
        self._progress(
            f"{self.label}: chunk {self.chunks}/{max(total_chunks, self.chunks)}, "
            f"{chunk_rows:,} rows ({self.rows:,} total, {rate / 1000:,.0f}k rows/s)"
        )
