"""Prototype (issue 14): a partition read through connectorx's binary protocol.

Not the product path (docs/benchmarks.md, *How we got here*): `benchmarks.worker plex_cx_stream` measures it
and `python -m benchmarks.check_cx DATABASE` compares it with PartitionStream on every table.

The rows SQL is the reader's own (`partition_query(...).rows_sql`) with each column selected
typed where connectorx 0.4.6 gives the exact value (signed integers, DOUBLE, text) and as
`CAST(... AS CHAR)` otherwise (DECIMAL comes back as decimal128(38, 10), TIME beyond 24 h and
zero dates in DATE/DATETIME panic, BIGINT UNSIGNED, and every column with a type-map
`select_sql`), the text
then converted by `typemap.convert` exactly as today. One transaction, opened by
`pre_execution_query` on the connection that runs the query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote as urlquote

import pyarrow as pa
import pyarrow.compute as pc

from plex_etl.catalog.relationships import quote
from plex_etl.extract.spec import ReplicatedTable
from plex_etl.extract.sql import partition_query
from plex_etl.sources import Source, resolve_credentials
from plex_etl.typemap import convert

# DATE and DATETIME stay text: connectorx panics on zero dates (0000-00-00), which the type map
# turns into NULL and counts.
TYPED_RULES = frozenset({"integer", "float", "text"})


def cx_url(source: Source) -> str:
    c = resolve_credentials(source)
    password = f":{urlquote(str(c.password), safe='')}" if str(c.password) else ""
    return f"mysql://{urlquote(c.user, safe='')}{password}@{c.host}:{c.port}/{c.database}"


def typed(column: Any, mapped: Any) -> bool:
    plain = mapped.select_sql == "{column}"
    return mapped.rule in TYPED_RULES and plain and "unsigned" not in column.column_type.lower()


def cx_rows_sql(spec: ReplicatedTable, start: dt.date | None, end: dt.date | None) -> tuple[str, list[bool]]:
    """The reader's rows SQL with the connectorx-safe select list; per column: typed or text."""
    rows_sql = partition_query(spec, start, end).rows_sql
    original, safe, kinds = [], [], []
    for column, mapped in zip(spec.table.columns, spec.mapped, strict=True):
        expression = mapped.select_sql.format(column=f"t.{quote(column.name)}")
        original.append(f"{expression} AS {quote(column.name)}")
        is_typed = typed(column, mapped)
        safe.append(f"{expression} AS {quote(column.name)}" if is_typed
                    else f"CAST({expression} AS CHAR) AS {quote(column.name)}")
        kinds.append(is_typed)
    prefix = "SELECT " + ", ".join(original) + ", "
    if not rows_sql.startswith(prefix):
        raise ValueError(f"{spec.name}: unexpected rows SQL shape")
    return "SELECT " + ", ".join(safe) + ", " + rows_sql[len(prefix):], kinds


def cx_batches(source: Source, spec: ReplicatedTable, start: dt.date | None, end: dt.date | None,
               counts: dict[dt.date, int] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of the catalog's Arrow schema (`chunk_rows` rows each, the last shorter).

    With `counts` (a dict to fill): the per-day COUNT(*) of the same snapshot, computed by the
    pre-execution into a user variable and returned as one extra row appended with UNION ALL
    (connectorx returns a single result set); MariaDB then runs the query through a temporary
    table (docs/benchmarks.md, *How we got here*: 0.77x the text reader of then)."""
    import connectorx as cx

    sql, kinds = cx_rows_sql(spec, start, end)
    pre = ["SET time_zone = '+00:00'", "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
           "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"]
    width = len(spec.table.columns) + 1
    if counts is not None:
        count_sql = partition_query(spec, start, end).count_sql.replace("COUNT(*)", "COUNT(*) AS n", 1)
        pre.append(f"SET @plexetl_counts = (SELECT GROUP_CONCAT(CONCAT(d, '=', n)) FROM ({count_sql}) c)")
        head, tail = sql.split(" FROM ", 1)
        sql = (f"{head}, CAST(NULL AS CHAR) AS _plexetl_counts FROM {tail} "
               f"UNION ALL SELECT {', '.join(['NULL'] * width)}, @plexetl_counts")
    reader = cx.read_sql(cx_url(source), sql, return_type="arrow_stream", batch_size=spec.plan.chunk_rows,
                         pre_execution_query=pre)
    schema = spec.target.arrow_schema
    for batch in reader:
        if counts is not None and batch.num_rows:
            marker = batch.column(width)
            if marker.null_count < batch.num_rows:  # the counts row: the last one of the result
                text = marker[batch.num_rows - 1].as_py() or b""
                for item in filter(None, (text.decode() if isinstance(text, bytes) else text).split(",")):
                    day, n = item.split("=")
                    counts[dt.date.fromisoformat(day)] = int(n)
                batch = batch.slice(0, batch.num_rows - 1)
        if not batch.num_rows:
            continue
        arrays = []
        for i, (column, mapped) in enumerate(zip(spec.table.columns, spec.mapped, strict=True)):
            raw = batch.column(i)
            if kinds[i]:
                arrays.append(pc.cast(raw, mapped.arrow_type))
            else:
                arrays.append(convert(raw.cast(pa.binary()), mapped, column.name)[0])
        arrays.append(pc.cast(batch.column(len(arrays)), pa.date32()))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
