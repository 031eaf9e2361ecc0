"""Stream the rows of a partition range out of MySQL as Arrow record batches.

One read-only transaction WITH CONSISTENT SNAPSHOT per stream, one statement for the rows.
The per-day row counts are tallied from the rows read (each row's day is computed by the
server, with the expression the WHERE bounds) and their total must equal the server's own
count of the rows that statement sent (FOUND_ROWS() on the same connection, after the last
row); the fetches are numbered, so each row the driver delivered is tallied exactly once.
A row lost or doubled between the server and the tally fails the read; one lost or doubled
after it (conversion, chunks, warehouse) fails the row-count check against these counts.
Counts and rows are one snapshot by construction, without the second pass over the range
that a COUNT(*) costs (docs/benchmarks.md, *How we got here*). Rows come through an unbuffered
(server-side) result in small fetches and are grouped into record batches of exactly the
table's chunk size: memory is bounded by one chunk whatever the table size. No LIMIT/OFFSET
paging.

The read (docs/benchmarks.md, *Extraction*): the rows statement runs as a prepared statement
over the binary protocol, on the reader's own mysqlclient connection (the C extension
`extract/_binary.c`, which takes the connection's MYSQL* through extract/native.py; where it
cannot run, the text protocol of extract/text.py, same interface, all values as text). A
fetch thread reads ahead: each fetch fills Arrow column buffers in C with the GIL released.
Integers, doubles, decimals, dates and timestamps come as the type map's Arrow values where the protocol's value is
exactly that (`column_kinds`); every other value, and every date that is no calendar date,
comes as the bytes of the server's text protocol and is converted by the type map as
before (`typed`), while the next fetch is read. Being the same connection, the statement is
inside the snapshot, and the session's timeouts and the KILL below apply to it.

Stopping: a read stopped before its end (SIGTERM or SIGINT turned into an exception by
Dagster or the caller, a consumer that closes the stream, any error) ends promptly and
releases its MySQL connection at any phase. Every call that may block on the server runs
in a helper thread while the caller's thread waits interruptibly (a signal's exception
surfaces within ~0.1 s), and a stopped read kills its own server thread (`KILL <id>` from a
second connection of the same user): the server stops the query at once, instead of
finishing a long server-side phase (a materialized view, a sort) or being drained row by
row when the result is freed.

Bounded: every call on the server is given up after the source's `read_timeout` without
progress (a fetch that returns no rows for that long, a statement that does not answer; the
connection itself after `connect_timeout` + `read_timeout`), whatever the driver's own socket
timeout does (libmariadb's was seen not to apply inside a fetch). The read then kills its
server thread (the KILL connection has its own short timeouts: an unreachable server does
not hold it either), shuts its socket so that the blocked call returns, and fails with an
ExtractionTimeout naming source, table and rows read, which another attempt may not meet.
A wait logs every 10 s (plex_etl/waits.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from plex_etl import waits
from plex_etl.errors import TransientError
from plex_etl.extract.access import Access, choose_access, runner
from plex_etl.extract.spec import ReplicatedTable, new_key_column
from plex_etl.extract.sql import partition_query
from plex_etl.mysql import raw_connection
from plex_etl.sources import Source
from plex_etl.typemap import MappedType, ValueConversionError, convert
from plex_etl.warehouse.base import PARTITION_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa

# numpy and pyarrow are imported by the functions that read, not by this module: the code
# location imports PartitionStream but reads nothing when it loads.

log = logging.getLogger(__name__)

FETCH_ROWS = 8_192  # rows per driver fetch
QUEUE_FETCHES = 2  # fetches read ahead by the fetch thread: memory stays bounded
STOP_WAIT = 10.0  # seconds to wait for a killed call's thread before closing the connection anyway
KILL_WAIT = 10.0  # at most this long (and half the read_timeout) to reach the server for the KILL
SHUTDOWN_GRACE = 0.5  # seconds a killed call has to return before its socket is shut under it


class _Session:
    """One extraction connection whose blocking calls can be abandoned at any moment.

    `call` runs a driver call in a helper thread and waits for it in slices (waits.call), so
    that a signal handler's exception (KeyboardInterrupt, Dagster's interruption, SystemExit)
    is raised in the caller's thread while the server is still busy, and gives up after the
    source's read_timeout (WaitTimeout). `abort` kills the connection's server thread from a
    second connection (idempotent) and shuts the socket under a call that still does not
    return. `close` waits for the helper threads (libmariadb is not thread-safe) before
    closing the connection. `label` ("plex.lineas 2026-11-20") names the read in the lines
    a long wait logs, to `report` when given (the run's log), else plex_etl.waits' logger.
    """

    def __init__(self, source: Source, connect: Callable[[Source], Any], label: str = "",
                 report: Callable[[str], None] | None = None) -> None:
        self.source = source
        self.label = label or source.name
        self.report = report
        self._connect = connect
        self.rows = 0  # rows fetched so far (the fetch thread counts them)
        # Abandoned on timeout, a late connection is closed when the helper's result is dropped.
        self.connection = waits.call(connect, source, what=self.describe("connecting"),
                                     limit=source.connect_timeout + source.read_timeout, report=report)
        self.thread_id: int | None = self.connection.thread_id()
        # Our own handle on the socket, to shut it under a blocked call: a duplicate, so that it
        # cannot be another file's should libmariadb close its descriptor meanwhile.
        self._socket = socket.socket(fileno=os.dup(self.connection.fileno()))
        self.aborted = False
        self.killed = ""  # what the abort did, for messages
        # One event per helper thread, set when it no longer touches the connection. Waits use
        # these, never Thread.join: a join interrupted by a signal can mark a running thread as
        # stopped (CPython gh-90882), and closing under it fails ("already in use").
        self._running: list[threading.Event] = []

    def describe(self, doing: str) -> str:
        """'plex.lineas 2026-11-20: fetching rows from MySQL source 'plex' (...), 8,192 rows so far'."""
        return f"{self.label}: {doing} from MySQL {self.source.describe()}, {self.rows:,} rows so far"

    def call(self, fn: Callable[..., Any], *args: Any, doing: str = "running a statement", **kwargs: Any) -> Any:
        return waits.call(fn, *args, what=lambda: self.describe(doing), limit=self.source.read_timeout,
                          done=self.running(), report=self.report, **kwargs)

    def running(self) -> threading.Event:
        """An event for a thread about to use the connection, to set when it stops using it."""
        done = threading.Event()
        self._running = [e for e in self._running if not e.is_set()] + [done]
        return done

    def query(self, sql: str, doing: str = "running a statement") -> None:
        self.call(self.connection.query, sql, doing=doing)

    def run(self, sql: str) -> Sequence[tuple[Any, ...]]:
        """`mysql.Run` on this connection, bounded like every call."""
        return self.call(runner(self.connection), sql, doing="finding the key range")

    def abort(self) -> str:
        """Kill this connection's server thread: its running query stops, the server frees it.
        Then shut the socket under a call that still does not return (the server unreachable).
        Returns what it did, for messages."""
        if self.aborted or self.thread_id is None:
            return self.killed
        self.aborted = True
        self.killed = self._kill()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for done in self._running:
            done.wait(max(0.0, deadline - time.monotonic()))
        if not all(done.is_set() for done in self._running):
            with contextlib.suppress(OSError):  # shut already
                self._socket.shutdown(socket.SHUT_RDWR)
        return self.killed

    def _kill(self) -> str:
        """KILL the server thread from a second connection whose own timeouts are short: an
        unreachable server must not hold the stopped read either."""
        budget = min(self.source.read_timeout / 2, KILL_WAIT)
        seconds = max(1, int(budget))
        killer_source = dataclasses.replace(self.source, connect_timeout=seconds, read_timeout=seconds,
                                            write_timeout=seconds)

        def kill() -> None:
            killer = self._connect(killer_source)
            try:
                killer.query(f"KILL {int(self.thread_id)}")  # type: ignore[arg-type]
            finally:
                killer.close()

        try:
            waits.call(kill, what=self.describe(f"killing server thread {self.thread_id}"), limit=budget)
        except Exception as exc:  # 1094 unknown thread: it had ended already
            if not (getattr(exc, "args", None) and exc.args[0] == 1094):
                log.warning("could not kill MySQL thread %s of %s: %s", self.thread_id, self.source.name, exc)
                return (f"its server thread {self.thread_id} could not be killed ({exc}); the server ends it "
                        "after its net_write_timeout")
        return f"its server thread {self.thread_id} was killed"

    def close(self) -> None:
        self._socket.close()  # a duplicate: the connection's own descriptor stays open
        deadline = time.monotonic() + STOP_WAIT
        for done in self._running:
            done.wait(max(0.0, deadline - time.monotonic()))
        if not all(done.is_set() for done in self._running):
            # Still blocked although killed (the server unreachable): closing the socket under the
            # thread is unsafe, leave the connection to the process exit and the server's timeouts.
            log.warning("MySQL thread %s of %s did not stop within %s s", self.thread_id, self.source.name, STOP_WAIT)
            return
        self.connection.close()


class _Fetcher:
    """Reads the unbuffered result in a background thread while the caller converts.

    The C fetch releases the GIL while it reads rows off the socket and fills their column
    buffers, so the network/server wait of the next fetch overlaps the type map's
    conversion of the previous one. At most QUEUE_FETCHES fetches wait in the queue (plus
    one being read and one being converted): memory stays flat whatever the table size.
    Fetch sizes follow the chunk boundaries so every chunk is exactly `chunk_rows` rows.
    Iterating yields each fetch (rows, columns), then (0, []) at the end of the result; a
    driver error is re-raised in the caller. Fetches are numbered and the consumer checks
    the numbers: none is lost or seen twice on the way (the row counts are tallied from
    them). Leaving the `with` block stops the thread and waits for it before
    the caller may close the statement or the connection (libmariadb is not thread-safe).
    """

    def __init__(self, statement: Any, chunk_rows: int, session: _Session | None = None) -> None:
        self._statement = statement
        self._chunk_rows = chunk_rows
        self._session = session
        self._done = False
        self._stopped = session.running() if session is not None else threading.Event()
        self._queue: queue.Queue[tuple[int, tuple[int, list]] | BaseException] = queue.Queue(QUEUE_FETCHES)
        self._stop = threading.Event()
        self._since: float | None = None  # when the running fetch started (None: not fetching)
        self._thread = threading.Thread(target=self._run, name="plex-etl-fetch", daemon=True)

    def __enter__(self) -> _Fetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if not self._done and self._session is not None:
            # Stopped before the end of the result (an interruption, a closed stream, an error):
            # the fetch thread may be waiting on the server, and freeing an unfinished
            # unbuffered result would read all its remaining rows. Kill it server-side first.
            self._session.abort()
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)  # unblock a put

    def _put(self, item: tuple[int, tuple[int, list]] | BaseException) -> bool:
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
            for number in itertools.count():
                if self._stop.is_set():
                    return
                room = self._chunk_rows - fetched % self._chunk_rows
                self._since = time.monotonic()
                rows, columns = self._statement.fetch(min(FETCH_ROWS, room))
                self._since = None
                fetched += rows
                if self._session is not None:
                    self._session.rows = fetched
                if not self._put((number, (rows, columns))) or not rows:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        finally:
            self._stopped.set()

    def __iter__(self) -> Iterator[tuple[int, list]]:
        for expected in itertools.count():
            item = self._next()
            if isinstance(item, BaseException):
                raise item
            number, item = item
            if number != expected:
                raise RuntimeError(f"fetch {number} arrived where fetch {expected} was due")
            if not item[0]:
                self._done = True
            yield item
            if not item[0]:
                return

    def _next(self) -> tuple[int, tuple[int, list]] | BaseException:
        """The next fetch, waited for interruptibly; WaitTimeout once the running fetch has
        brought nothing for the source's read_timeout."""
        box = []

        def ready(seconds: float) -> bool:
            with contextlib.suppress(queue.Empty):
                box.append(self._queue.get(timeout=seconds))
            return bool(box)

        if self._session is None:
            waits.wait(ready, lambda: "fetching rows", None)
        else:
            session = self._session
            waits.wait(ready, lambda: session.describe("fetching rows"), session.source.read_timeout,
                       since=lambda: self._since, report=session.report)
        return box[0]


def column_kinds(mapped: Iterable[MappedType]) -> list[tuple[str, int, int]]:
    """What the binary read asks for each column: (kind, precision, scale), see _binary.c.

    The Arrow value of the type map itself where the protocol's value gives it exactly:
    int64 for rule "integer", float64 for "float" (a DOUBLE's 8 bytes, or a FLOAT's 4
    widened: the value its shortest text parses to), decimal128 for "decimal" (parsed from
    the DECIMAL's text in C), date32 and timestamps for dates and times; the text for every
    other rule. The C module keeps a column as text where the result column's type would
    not give the type map's value (BIGINT UNSIGNED read as int64, a DECIMAL of another
    scale): `Statement.kinds` says what it chose."""
    kinds = []
    for m in mapped:
        if m.rule == "decimal" and m.arrow.factory == "decimal128":
            kinds.append(("n", *m.arrow.args))
        else:
            kinds.append(({"integer": "i", "float": "f", "date": "d", "datetime": "t", "timestamp": "t"}
                          .get(m.rule, "b"), 0, 0))
    return kinds


def fetched_arrays(rows: int, columns: list[tuple], kinds: str, types: list[pa.DataType]) -> list[pa.Array]:
    """One fetch's column buffers (`Statement.fetch`) as Arrow arrays: of `types` where the
    column came typed, binary (the text) where it came as text ('b')."""
    import pyarrow as pa

    arrays = []
    for kind, (nulls, validity, values, text, _odd), arrow_type in zip(kinds, columns, types, strict=True):
        buffers = [pa.py_buffer(validity) if nulls else None, pa.py_buffer(values)]
        if kind == "b":
            arrow_type, buffers = pa.binary(), [*buffers, pa.py_buffer(text)]
        arrays.append(pa.Array.from_buffers(arrow_type, rows, buffers, nulls))
    return arrays


def typed(raw: pa.Array, mapped: MappedType, column: str, odd: tuple | None = None) -> tuple[pa.Array, dict[str, int]]:
    """A column of the binary read as the type map's value: typed as it came, or converted
    from its text by the type map (ValueConversionError for a value it cannot load). `odd`:
    the dates of a typed date column that are no calendar date (NULL in `raw`), as (rows,
    offsets, text): the type map converts and counts them as it always did (they all
    become NULL: zero dates, zero months or days, year 0, invalid days)."""
    import pyarrow as pa

    if raw.type == pa.binary():
        return convert(raw, mapped, column)
    if odd is None:
        return raw, {}
    rows, offsets, text = odd
    texts = pa.Array.from_buffers(pa.binary(), len(rows) // 4, [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    values, fixes = convert(texts, mapped, column)
    if values.null_count != len(values):
        raise RuntimeError(f"column {column!r}: the type map loaded a date that is no calendar date")
    return raw, fixes


# Client errors of a connection that stayed silent past read_timeout or dropped:
# CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED.
_LOST_CONNECTION_CODES = {2006, 2013, 2055}


def _is_lost_connection(exc: BaseException) -> bool:
    args = getattr(exc, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _LOST_CONNECTION_CODES


class ExtractionError(RuntimeError):
    """A partition could not be read; the message names source, table and, for values, column."""


class ExtractionTimeout(ExtractionError, TransientError):
    """MySQL gave no data for the source's read_timeout: the read was stopped (another attempt
    may not meet the stall)."""


def describe_days(start: dt.date | None, end: dt.date | None) -> str:
    """'2026-11-20', '2026-11-01..2026-11-20', '..2026-11-20' (from the first), '2026-11-20..'."""
    if start is not None and start == end:
        return start.isoformat()
    return f"{start or ''}..{end or ''}"


class PartitionStream:
    """An iterable of record batches for partitions [start, end] of one table.

    `start`/`end` None leave that side open (see extract.sql.partition_query): the read of
    the first partition includes the undated rows, the read of today the future-dated ones.
    Nothing touches MySQL until iteration starts. After iteration: `snapshot_counts` (rows
    per day, in the read's snapshot; set once the server's total has confirmed them);
    during and after: `rows`, `chunks`, `fixes`.
    """

    def __init__(
        self,
        source: Source,
        spec: ReplicatedTable,
        start: dt.date | None,
        end: dt.date | None,
        progress: Callable[[str], None] | None = None,
        connect: Callable[[Source], Any] = raw_connection,
        new_keys_above: int | None = None,
    ) -> None:
        self.source = source
        self.spec = spec
        self.start = start
        self.end = end
        # Also the rows whose own key is above this one, whatever their day (sql.partition_query).
        column = new_key_column(spec)
        self.above = (column, new_keys_above) if column is not None and new_keys_above is not None else None
        self.query = partition_query(spec, start, end, above=self.above)
        self.schema = spec.target.arrow_schema
        self.snapshot_counts: dict[dt.date, int] = {}
        self.rows = 0
        self.chunks = 0
        self.fixes: Counter[str] = Counter()
        self.seconds = 0.0
        self.access: Access | None = None  # the key range of the read (extract/access.py), once read
        self._tally: Counter[dt.date] = Counter()  # rows read per day (their _etl_partition_date)
        self._progress = progress
        self._connect = connect

    @property
    def label(self) -> str:
        days = describe_days(self.start, self.end)
        return f"{self.spec.name} {days}"

    @property
    def merges_outside_range(self) -> bool:
        """Whether rows dated outside [start, end] may come (new keys), to be merged by key."""
        return self.above is not None

    @property
    def expected_rows(self) -> int:
        return sum(self.snapshot_counts.values())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        started = time.perf_counter()
        self._tally.clear()  # the counts are this iteration's
        name = f"{self.source.name}.{self.label}"
        try:
            session = _Session(self.source, self._connect, name, self._progress)
        except waits.WaitTimeout as exc:
            raise ExtractionTimeout(
                f"{name}: no answer from {self.source.describe()} within {exc.waited:.0f} s while connecting "
                "(its connect_timeout + read_timeout in sources.yaml)"
            ) from exc
        finished = False
        try:
            # The server gives up on a client that stops reading after the same time the client
            # gives up on a silent server: neither side of a stalled read waits forever.
            session.query(
                f"SET SESSION net_write_timeout = {int(self.source.read_timeout)}, "
                f"net_read_timeout = {int(self.source.write_timeout)}", "setting up the session"
            )
            session.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", "setting up the session")
            session.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", "starting the snapshot")
            # The key range (index lookups) in the same snapshot: counts and rows both get it.
            self.access = choose_access(session.run, self.spec, self.start, self.end)
            if self.access.keys is not None:
                self.query = partition_query(self.spec, self.start, self.end, self.access.keys, self.above)
            chunks = self._chunks(session)
            with contextlib.closing(chunks):  # closed here, not by the garbage collector
                for chunk in chunks:
                    self.rows += chunk.num_rows
                    self.chunks += 1
                    self.seconds = time.perf_counter() - started
                    self._report(chunk.num_rows)
                    yield chunk
            self._verify_total(session)
            self.snapshot_counts = dict(sorted(self._tally.items()))
            session.query("COMMIT", "committing")
            finished = True
        except Exception as exc:
            if isinstance(exc, ExtractionError):
                raise
            if isinstance(exc, waits.WaitTimeout):
                raise ExtractionTimeout(
                    f"{exc.what}: no data for {self.source.read_timeout} s (its read_timeout in sources.yaml); "
                    f"{session.abort()}"
                ) from exc
            message = str(exc)
            if _is_lost_connection(exc):
                message = (
                    f"no data from {self.source.describe()} for {self.source.read_timeout} s "
                    f"(its read_timeout in sources.yaml) or the connection dropped, after "
                    f"{self.rows:,} rows: {message}"
                )
            raise ExtractionError(f"{name}: {message}") from exc
        finally:
            if not finished:  # stopped early (interrupted, closed, failed): free the server now
                session.abort()
            session.close()
            # Hand the chunks' freed Arrow memory back to the OS: what follows the stream (the
            # warehouse's merge, the next table) starts from a small footprint again.
            pa.default_memory_pool().release_unused()
            self.seconds = time.perf_counter() - started

    def _verify_total(self, session: _Session) -> None:
        """The server's count of the rows the statement sent must be the rows tallied.

        FOUND_ROWS() right after a SELECT without LIMIT is the number of rows the server
        sent for it (MariaDB; MySQL 5.7/8.0, deprecated since 8.0.17 but still there).
        Together with the per-fetch checks (every line has all its fields), the tally per
        day is then the snapshot's per-day count: the day of each row is the server's own
        expression, the same one the WHERE bounds."""

        def found_rows() -> tuple:
            session.connection.query("SELECT FOUND_ROWS()")
            return session.connection.store_result().fetch_row(maxrows=1, how=0)

        ((sent,),) = session.call(found_rows, doing="counting the rows sent (FOUND_ROWS)")
        if int(sent) != self.rows or sum(self._tally.values()) != self.rows:
            raise ExtractionError(
                f"{self.source.name}.{self.label}: the server sent {int(sent):,} rows but "
                f"{self.rows:,} were read ({sum(self._tally.values()):,} counted per day)"
            )

    def _chunks(self, session: _Session) -> Iterator[pa.RecordBatch]:
        """The rows statement over the binary protocol, converted one fetch at a time."""
        import pyarrow as pa

        from plex_etl.extract.text import open_statement  # the binary read, or the text read (extract/text.py)

        kinds = [*column_kinds(self.spec.mapped), ("d", 0, 0)]  # the day: a DATE
        statement = session.call(open_statement, session.connection, self.query.rows_sql, kinds,
                                 doing="running the rows statement")
        types = [*(m.arrow_type for m in self.spec.mapped), pa.date32()]
        try:
            chunk_rows = self.spec.plan.chunk_rows
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            with _Fetcher(statement, chunk_rows, session) as fetcher:
                for rows, columns in fetcher:
                    if rows:
                        arrays = fetched_arrays(rows, columns, statement.kinds, types)
                        batch = self._to_batch(arrays, [column[4] for column in columns])
                        pending.append(batch)
                        pending_rows += batch.num_rows
                    if pending and (pending_rows >= chunk_rows or not rows):
                        del columns
                        yield pa.Table.from_batches(pending, self.schema).combine_chunks().to_batches()[0]
                        pending, pending_rows = [], 0
        finally:
            session.call(statement.close, doing="closing the rows statement")

    def _to_batch(self, columns: list[pa.Array], odd: list[tuple | None] | None = None) -> pa.RecordBatch:
        """The columns of some rows (data columns then the day) as the schema's record batch.

        `odd`: per column, the dates that are no calendar date (see `typed`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        odd = odd or [None] * len(columns)
        arrays = []
        for column, mapped, raw, strange in zip(self.spec.table.columns, self.spec.mapped, columns, odd, strict=False):
            try:
                array, fixes = typed(raw, mapped, column.name, strange)
            except ValueConversionError as exc:
                raise ExtractionError(f"{self.source.name}.{self.spec.name}: {exc}") from None
            self.fixes.update(fixes)
            arrays.append(array)
        day = columns[-1]
        if odd[-1] is not None:  # the text would not cast either
            raise ValueError(f"a row's {PARTITION_COLUMN} is no calendar date: {odd[-1][2][:10]!r}")
        if day.type != pa.date32():  # the text read's day (extract/text.py)
            day = pc.cast(day.cast(pa.string()), pa.date32())
        for entry in pc.value_counts(day).to_pylist():
            self._tally[entry["values"]] += entry["counts"]
        arrays.append(day)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _report(self, chunk_rows: int) -> None:
        if self._progress is None:
            return
        rate = self.rows / self.seconds if self.seconds else 0.0
        self._progress(
            f"{self.label}: chunk {self.chunks}, "
            f"{chunk_rows:,} rows ({self.rows:,} total, {format_rate(rate)})"
        )


def format_rate(rows_per_second: float) -> str:
    """'850 rows/s', '12.5k rows/s', '180k rows/s': never '0k rows/s'."""
    if rows_per_second < 10_000:
        return f"{rows_per_second:,.0f} rows/s"
    if rows_per_second < 100_000:
        return f"{rows_per_second / 1000:,.1f}k rows/s"
    return f"{rows_per_second / 1000:,.0f}k rows/s"
