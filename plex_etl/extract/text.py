"""The text-protocol read: the reader's statement when the binary read cannot run.

The binary read (the C extension `extract/_binary.c`, reached through extract/native.py) is
the fast path. When it is not built (no client headers at install, setup.py), does not load,
or links another client library than mysqlclient (native.py), or when PLEX_ETL_READER=text
asks for it, the same rows statement is read here through mysqlclient's public text protocol
(an unbuffered result, rows as tuples of bytes) on the same connection: same snapshot, same
FOUND_ROWS(), same timeouts and KILL. `TextStatement` has the extension's Statement's
interface (fetch, kinds, close) and hands every column over as the text protocol's text ('b'),
so stream.py's one fetch loop converts both through the type map, which turns the text into
the same Arrow values as the binary read (plex_etl_tests/test_read_paths.py compares the two
on every demo table). It is several times slower than the binary read (docs/benchmarks.md,
section F).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from plex_etl.extract.native import BinaryReadUnavailable, binary_statement

log = logging.getLogger(__name__)

READER_VARIABLE = "PLEX_ETL_READER"
READERS = ("binary", "text")  # unset: the binary read when it can run, else the text read


class TextStatement:
    """`sql` executed on a mysqlclient connection, its rows fetched through the text protocol
    in the extension Statement's column layout (every column as text, kind 'b')."""

    def __init__(self, connection: Any, sql: str, kinds: list[tuple[str, int, int]]) -> None:
        connection.query(sql)
        self._result: Any = connection.use_result()  # unbuffered: rows are read by fetch
        self.kinds = "b" * len(kinds)
        if self._result.num_fields() != len(kinds):
            raise ValueError(f"the statement has {self._result.num_fields()} columns, {len(kinds)} kinds were given")

    def fetch(self, max_rows: int) -> tuple[int, list[tuple]]:
        """(rows, columns) as the extension's Statement.fetch: (0, []) once the result has ended."""
        import pyarrow as pa

        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if self._result is None:
            raise ValueError("the statement is closed")
        rows = self._result.fetch_row(maxrows=max_rows, how=0)
        if not rows:
            return 0, []
        columns = []
        for values in zip(*rows, strict=True):
            array = pa.array(values, pa.binary())
            validity, offsets, text = array.buffers()
            columns.append((array.null_count, validity, offsets, text or b"", None))
        return len(rows), columns

    def close(self) -> None:
        # Freeing an unfinished unbuffered result reads its remaining rows: the reader kills the
        # query first when it stops early (stream.py), as for the binary read.
        self._result = None


_warned: set[str] = set()


def open_statement(connection: Any, sql: str, kinds: list[tuple[str, int, int]]) -> Any:
    """The rows statement on `connection`: the binary read, or the text read when
    PLEX_ETL_READER=text or the binary read cannot run here (warned once per process; with
    PLEX_ETL_READER=binary that is an error instead)."""
    reader = os.environ.get(READER_VARIABLE, "")
    if reader and reader not in READERS:
        raise ValueError(f"{READER_VARIABLE}={reader!r}: expected one of {', '.join(READERS)} or unset")
    if reader == "text":
        return TextStatement(connection, sql, kinds)
    try:
        return binary_statement(connection, sql, kinds)
    except BinaryReadUnavailable as exc:
        if reader == "binary":
            raise
        if str(exc) not in _warned:
            _warned.add(str(exc))
            log.warning("reading MySQL through the slower text protocol: %s", exc)
        return TextStatement(connection, sql, kinds)
