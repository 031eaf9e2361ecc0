"""Stream the rows of a partition range out of MySQL as Arrow record batches.

One read-only transaction WITH CONSISTENT SNAPSHOT per stream: the per-day row counts
and the rows themselves come from the same snapshot, so the row-count check compares
like with like. Rows come through an unbuffered (server-side) cursor of the C driver
in small fetches and are grouped into record batches of exactly the table's chunk size:
memory is bounded by one chunk whatever the table size. No LIMIT/OFFSET paging.

Two ways to read, same values (docs/benchmarks.md has the measurements):
- the CSV read (every table without binary values): the server prints each row as one
  CSV line (`PartitionQuery.csv_sql`), a fetch thread reads ahead while the caller parses
  the lines with pyarrow.csv and converts each column with the type map;
- the per-column read (tables with binary values): tuples of bytes, transposed and
  converted column by column with the type map.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from plex_etl.extract.spec import ReplicatedTable
from plex_etl.extract.sql import partition_query
from plex_etl.mysql import raw_connection
from plex_etl.sources import Source
from plex_etl.typemap import ValueConversionError, convert

FETCH_ROWS = 8_192  # rows per driver fetch
QUEUE_FETCHES = 2  # fetches read ahead by the fetch thread: memory stays bounded
CSV_BLOCK_BYTES = 1 << 22  # pyarrow.csv block size (one thread: the server and the fetch thread use the cores)


class _Fetcher:
    """Reads the unbuffered result in a background thread while the caller converts.

    mysqlclient releases the GIL while libmariadb reads a row off the socket, so the
    network/server wait of the next fetch overlaps the Arrow conversion of the previous
    one. At most QUEUE_FETCHES fetches wait in the queue (plus one being read and one
    being converted): memory stays flat whatever the table size. Fetch sizes follow the
    chunk boundaries so every chunk is exactly `chunk_rows` rows. Iterating yields
    each fetch, then one empty tuple at the end of the result; a driver error is
    re-raised in the caller. Leaving the `with` block stops the thread and waits for it
    before the caller may close the connection (libmariadb is not thread-safe).
    """

    def __init__(self, result: Any, chunk_rows: int) -> None:
        self._result = result
        self._chunk_rows = chunk_rows
        self._queue: queue.Queue[tuple | BaseException] = queue.Queue(QUEUE_FETCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plex-etl-fetch", daemon=True)

    def __enter__(self) -> _Fetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)  # unblock a put
        self._thread.join()

    def _put(self, item: tuple | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        fetched = 0
        try:
            while not self._stop.is_set():
                room = self._chunk_rows - fetched % self._chunk_rows
                rows = self._result.fetch_row(maxrows=min(FETCH_ROWS, room), how=0)
                fetched += len(rows)
                if not self._put(rows) or not rows:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def __iter__(self) -> Iterator[tuple]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if not item:
                return


# Client errors of a connection that stayed silent past read_timeout or dropped:
# CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED.
_LOST_CONNECTION_CODES = {2006, 2013, 2055}


def _is_lost_connection(exc: BaseException) -> bool:
    args = getattr(exc, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _LOST_CONNECTION_CODES


class ExtractionError(RuntimeError):
    """A partition could not be read; the message names source, table and, for values, column."""


def describe_days(start: dt.date | None, end: dt.date | None) -> str:
    """'2026-11-20', '2026-11-01..2026-11-20', '..2026-11-20' (from the first), '2026-11-20..'."""
    if start is not None and start == end:
        return start.isoformat()
    return f"{start or ''}..{end or ''}"


class PartitionStream:
    """An iterable of record batches for partitions [start, end] of one table.

    `start`/`end` None leave that side open (see extract.sql.partition_query): the read of
    the first partition includes the undated rows, the read of today the future-dated ones.
    Nothing touches MySQL until iteration starts. After (or during) iteration:
    `snapshot_counts` (rows per day, in the read's snapshot), `rows`, `chunks`, `fixes`.
    """

    def __init__(
        self,
        source: Source,
        spec: ReplicatedTable,
        start: dt.date | None,
        end: dt.date | None,
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
        days = describe_days(self.start, self.end)
        return f"{self.spec.name} {days}"

    @property
    def expected_rows(self) -> int:
        return sum(self.snapshot_counts.values())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        started = time.perf_counter()
        connection = self._connect(self.source)
        try:
            # The server gives up on a client that stops reading after the same time the client
            # gives up on a silent server: neither side of a stalled read waits forever.
            connection.query(
                f"SET SESSION net_write_timeout = {int(self.source.read_timeout)}, "
                f"net_read_timeout = {int(self.source.write_timeout)}"
            )
            connection.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            connection.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            self.snapshot_counts = self._counts(connection)
            total_chunks = max(1, math.ceil(self.expected_rows / self.spec.plan.chunk_rows))
            chunks = self._csv_chunks if self.query.csv_sql else self._tuple_chunks
            for chunk in chunks(connection):
                self.rows += chunk.num_rows
                self.chunks += 1
                self.seconds = time.perf_counter() - started
                self._report(total_chunks, chunk.num_rows)
                yield chunk
            connection.query("COMMIT")
        except Exception as exc:
            if isinstance(exc, ExtractionError):
                raise
            message = str(exc)
            if _is_lost_connection(exc):
                message = (
                    f"no data from {self.source.describe()} for {self.source.read_timeout} s "
                    f"(its read_timeout in sources.yaml) or the connection dropped, after "
                    f"{self.rows:,} rows: {message}"
                )
            raise ExtractionError(f"{self.source.name}.{self.label}: {message}") from exc
        finally:
            connection.close()
            # Hand the chunks' freed Arrow memory back to the OS: what follows the stream (the
            # warehouse's merge, the next table) starts from a small footprint again.
            pa.default_memory_pool().release_unused()
            self.seconds = time.perf_counter() - started

    def _counts(self, connection: Any) -> dict[dt.date, int]:
        connection.query(self.query.count_sql)
        counts: dict[dt.date, int] = {}
        for day, rows in connection.store_result().fetch_row(maxrows=0, how=0):
            if day is not None and int(rows):
                counts[dt.date.fromisoformat(day.decode())] = int(rows)
        return counts

    def _tuple_chunks(self, connection: Any) -> Iterator[pa.RecordBatch]:
        """Rows as tuples of column values (a table with binary columns), one fetch at a time."""
        connection.query(self.query.rows_sql)
        result = connection.use_result()
        chunk_rows = self.spec.plan.chunk_rows
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        while True:
            rows = result.fetch_row(maxrows=min(FETCH_ROWS, chunk_rows - pending_rows), how=0)
            if rows:
                pending.append(self._to_batch(rows))
                pending_rows += len(rows)
            if pending and (pending_rows >= chunk_rows or not rows):
                yield pa.Table.from_batches(pending, self.schema).combine_chunks().to_batches()[0]
                pending, pending_rows = [], 0
            if not rows:
                return

    def _csv_chunks(self, connection: Any) -> Iterator[pa.RecordBatch]:
        """Rows as CSV lines printed by the server, parsed one fetch at a time by pyarrow.csv.

        One value per row crosses into Python (instead of one per column), the fetch thread
        reads the next rows while this one parses and converts (both release the GIL). The
        parse runs on one thread: with the server on the same cores, more threads only
        cost CPU (measured, docs/benchmarks.md).
        """
        connection.query(self.query.csv_sql)
        names = [f"c{i}" for i in range(len(self.schema))]
        read = pcsv.ReadOptions(column_names=names, use_threads=False, block_size=CSV_BLOCK_BYTES)
        parse = pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        types = pcsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.binary()), null_values=["NULL"], strings_can_be_null=True,
            quoted_strings_can_be_null=False, check_utf8=False,
        )
        chunk_rows = self.spec.plan.chunk_rows
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        with _Fetcher(connection.use_result(), chunk_rows) as fetcher:
            for rows in fetcher:
                if rows:
                    try:
                        lines = b"\n".join([line for (line,) in rows]) + b"\n"
                    except TypeError:  # CONCAT gives NULL for a row over max_allowed_packet
                        raise ExtractionError(
                            f"{self.source.name}.{self.label}: a row is larger than the server's "
                            "max_allowed_packet (raise it to read this table)"
                        ) from None
                    table = pcsv.read_csv(pa.py_buffer(lines), read_options=read, parse_options=parse,
                                          convert_options=types)
                    del lines
                    if table.num_rows != len(rows):
                        raise ExtractionError(
                            f"{self.source.name}.{self.label}: {len(rows)} rows read but "
                            f"{table.num_rows} parsed (CSV framing)"
                        )
                    pending.append(self._to_batch_columns(table.columns))
                    pending_rows += len(rows)
                    del table
                if pending and (pending_rows >= chunk_rows or not rows):
                    del rows
                    yield pa.Table.from_batches(pending, self.schema).combine_chunks().to_batches()[0]
                    pending, pending_rows = [], 0

    def _to_batch_columns(self, columns: list[pa.ChunkedArray | pa.Array]) -> pa.RecordBatch:
        arrays = []
        for column, mapped, raw in zip(self.spec.table.columns, self.spec.mapped, columns, strict=False):
            try:
                array, fixes = convert(raw, mapped, column.name)
            except ValueConversionError as exc:
                raise ExtractionError(f"{self.source.name}.{self.spec.name}: {exc}") from None
            self.fixes.update(fixes)
            arrays.append(array)
        day = columns[-1]
        if isinstance(day, pa.ChunkedArray):
            day = day.combine_chunks()
        arrays.append(pc.cast(day.cast(pa.string()), pa.date32()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _to_batch(self, rows: tuple[tuple[bytes | None, ...], ...]) -> pa.RecordBatch:
        return self._to_batch_columns([pa.array(values, type=pa.binary()) for values in zip(*rows, strict=True)])

    def _report(self, total_chunks: int, chunk_rows: int) -> None:
        if self._progress is None:
            return
        rate = self.rows / self.seconds if self.seconds else 0.0
        self._progress(
            f"{self.label}: chunk {self.chunks}/{max(total_chunks, self.chunks)}, "
            f"{chunk_rows:,} rows ({self.rows:,} total, {format_rate(rate)})"
        )


def format_rate(rows_per_second: float) -> str:
    """'850 rows/s', '12.5k rows/s', '180k rows/s': never '0k rows/s'."""
    if rows_per_second < 10_000:
        return f"{rows_per_second:,.0f} rows/s"
    if rows_per_second < 100_000:
        return f"{rows_per_second / 1000:,.1f}k rows/s"
    return f"{rows_per_second / 1000:,.0f}k rows/s"
