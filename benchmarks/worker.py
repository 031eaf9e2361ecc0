"""One measurement in a fresh process: `python -m benchmarks.worker METHOD JSON-ARGS`.

Prints one JSON line: rows, seconds, read_seconds, read_cpu_seconds (this process's CPU, every
thread, over read_seconds; the MySQL server's is not in it), peak RSS (ru_maxrss of this process:
imports, driver buffers and Arrow memory all count). `seconds` is the whole method, its
imports and the bench table's catalog read included; `read_seconds` starts where the method
calls `_reading()`, after its imports and set-up: the read alone, comparable across methods.
run.py starts one process per run so that no run inherits another's memory or warm caches of the client.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

METHODS: dict[str, Callable[[dict[str, Any]], int]] = {}
_READ_STARTED: list[tuple[float, float]] = []  # (wall, process CPU)


def _reading() -> None:
    """Mark the start of the read proper (imports and set-up done)."""
    _READ_STARTED.append((time.perf_counter(), time.process_time()))


def method(function: Callable[[dict[str, Any]], int]) -> Callable[[dict[str, Any]], int]:
    METHODS[function.__name__] = function
    return function


def _bench(args: dict[str, Any]):  # -> (Source, ReplicatedTable)
    from benchmarks.bench_table import bench_source, bench_spec

    shape = args.get("shape", "bench")
    source = bench_source(args["table_rows"], shape)
    return source, bench_spec(source, chunk_rows=args.get("chunk_rows", 100_000), shape=shape)


def _stream(args: dict[str, Any]):
    from plex_etl.extract.stream import PartitionStream

    source, spec = _bench(args)
    today = dt.date.today()
    _reading()
    return PartitionStream(source, spec, today, today)


def _url(args: dict[str, Any]) -> str:
    from benchmarks.bench_table import bench_source

    return f"mysql://root@127.0.0.1:3306/{bench_source(args['table_rows']).database}"


def _limit(args: dict[str, Any]) -> str:
    rows = args.get("limit_rows")
    return f" WHERE id <= {int(rows)}" if rows else ""


@method
def idle(args: dict[str, Any]) -> int:
    """The same imports as the plex_etl runs, nothing read: the interpreter's baseline RSS."""
    import duckdb  # noqa: F401
    import MySQLdb  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    import plex_etl.extract.stream
    import plex_etl.warehouse.local  # noqa: F401

    _bench(args)
    pa.array([0])  # pyarrow imports pandas (when installed) on its first pa.array: every run pays it
    return 0


@method
def plex_extract(args: dict[str, Any]) -> int:
    """plex_etl PartitionStream to Arrow record batches (typed, converted), batches dropped."""
    return sum(batch.num_rows for batch in _stream(args))


@method
def plex_cx_stream(args: dict[str, Any]) -> int:
    """Prototype (issue 14): plex_etl's typed batches read through connectorx
    `read_sql(return_type="arrow_stream")` in one consistent-snapshot transaction
    (benchmarks/cx_read.py), converted to the catalog's Arrow schema; batches dropped."""
    from benchmarks.cx_read import cx_batches

    source, spec = _bench(args)
    today = dt.date.today()
    return sum(batch.num_rows for batch in cx_batches(source, spec, today, today))


@method
def plex_cx_stream_counted(args: dict[str, Any]) -> int:
    """The prototype with the snapshot's per-day counts (pre-execution + one UNION ALL row)."""
    from benchmarks.cx_read import cx_batches

    source, spec = _bench(args)
    today = dt.date.today()
    counts: dict[dt.date, int] = {}
    rows = sum(batch.num_rows for batch in cx_batches(source, spec, today, today, counts))
    if counts != {today: rows}:
        raise AssertionError(f"snapshot counts {counts} against {rows} rows read")
    return rows


@method
def plex_local(args: dict[str, Any]) -> int:
    """plex_etl end to end into the local (DuckDB) warehouse: stream, stage, swap in."""
    from plex_etl.warehouse.local import LocalWarehouse

    stream = _stream(args)
    with tempfile.TemporaryDirectory(prefix="plexetl_bench_") as tmp:
        # DuckDB settings only when given (null: DuckDB's own default), else the warehouse's defaults.
        settings = {k: args[f"duckdb_{k}"] for k in ("memory_limit", "threads") if f"duckdb_{k}" in args}
        warehouse = LocalWarehouse(Path(tmp) / "warehouse.duckdb", staging_dir=tmp, **settings)
        result = warehouse.load(stream.spec.target, stream, stream.start, stream.end, mode=args.get("mode", "replace"))
    return result.rows


@method
def plex_bigquery(args: dict[str, Any]) -> int:
    """plex_etl end to end into the BigQuery load path (Parquet load jobs) on the emulator."""
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client

    stream = _stream(args)
    client = bigquery_client(args["project"], "US", api_endpoint=args["endpoint"])
    warehouse = BigQueryWarehouse(
        client, "US", retry=DEFAULT_RETRY.with_timeout(60), job_retry=None, job_timeout=1800
    )
    result = warehouse.load(stream.spec.target, stream, stream.start, stream.end)
    return result.rows


@method
def plex_demo(args: dict[str, Any]) -> int:
    """Every included table of a demo Plex database, end to end into the local warehouse."""
    from zoneinfo import ZoneInfo

    from plex_etl.catalog.model import load_catalog
    from plex_etl.catalog.plan import load_plan
    from plex_etl.extract.spec import replicated_table
    from plex_etl.extract.stream import PartitionStream
    from plex_etl.sources import config_dir, get_source, with_database
    from plex_etl.warehouse.local import LocalWarehouse

    source = with_database(get_source("plex"), args["database"])
    catalog = load_catalog(config_dir() / "plex.catalog.yaml")
    plan = load_plan(config_dir() / "plex.plan.yaml", "plex")
    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    first = today - dt.timedelta(days=args.get("days", 400))
    rows = 0
    with tempfile.TemporaryDirectory(prefix="plexetl_bench_") as tmp:
        warehouse = LocalWarehouse(Path(tmp) / "warehouse.duckdb", staging_dir=tmp)
        for table_plan in sorted(plan.included, key=lambda p: p.table):
            spec = replicated_table(catalog, plan, table_plan.table)
            start = today if table_plan.strategy == "snapshot" else first
            stream = PartitionStream(source, spec, start, today)
            rows += warehouse.load(spec.target, stream, start, today).rows
    return rows


@method
def connectorx(args: dict[str, Any]) -> int:
    """connectorx read_sql(return_type="arrow"): one connection, the whole result in memory."""
    import connectorx as cx

    _reading()
    table = cx.read_sql(_url(args), "SELECT * FROM bench" + _limit(args), return_type="arrow")
    return table.num_rows


@method
def connectorx_ranges(args: dict[str, Any]) -> int:
    """connectorx over primary-key ranges (2 connections: no shared snapshot, a data point only)."""
    import connectorx as cx

    table = cx.read_sql(
        _url(args), "SELECT * FROM bench" + _limit(args), return_type="arrow",
        partition_on="id", partition_num=args.get("partitions", 2),
    )
    return table.num_rows


def _array(values: tuple) -> pa.Array:
    try:
        return pa.array(values)
    except OverflowError:  # BIGINT UNSIGNED above 2^63-1: as decimal128(20, 0)
        return pa.array([None if v is None else str(v) for v in values]).cast(pa.decimal128(20, 0))


def _cursor_to_arrow(cursor: Any, sql: str, size: int = 10_000) -> int:
    cursor.execute(sql)
    rows = 0
    while True:
        fetched = cursor.fetchmany(size)
        if not fetched:
            break
        columns = list(zip(*fetched, strict=True))
        batch = pa.RecordBatch.from_arrays([_array(c) for c in columns], names=[str(i) for i in range(len(columns))])
        rows += batch.num_rows
    return rows


def _sscursor_loop(args: dict[str, Any], driver: Any, cursor_class: type) -> int:
    from benchmarks.bench_table import bench_source

    connection = driver.connect(host="127.0.0.1", user="root", database=bench_source(args["table_rows"]).database,
                                charset="utf8mb4", cursorclass=cursor_class)
    try:
        return _cursor_to_arrow(connection.cursor(), "SELECT * FROM bench" + _limit(args))
    finally:
        connection.close()


@method
def pymysql_sscursor(args: dict[str, Any]) -> int:
    """A plain PyMySQL SSCursor loop, fetchmany(10000) -> pa.array per column."""
    import pymysql
    import pymysql.cursors

    return _sscursor_loop(args, pymysql, pymysql.cursors.SSCursor)


@method
def mysqlclient_sscursor(args: dict[str, Any]) -> int:
    """A plain mysqlclient (C) SSCursor loop, fetchmany(10000) -> pa.array per column."""
    import MySQLdb
    import MySQLdb.cursors

    return _sscursor_loop(args, MySQLdb, MySQLdb.cursors.SSCursor)


@method
def dlt_pyarrow(args: dict[str, Any]) -> int:
    """dlt sql_table(backend="pyarrow") iterated to Arrow tables (extraction only, no destination)."""
    import os

    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    from dlt.sources.sql_database import sql_table

    url = _url(args).replace("mysql://", "mysql+pymysql://")
    limit = args.get("limit_rows")

    def query_adapter(query: Any, table: Any) -> Any:
        return query.where(table.c.id <= limit) if limit else query

    resource_ = sql_table(credentials=url, table="bench", backend="pyarrow", chunk_size=args.get("chunk_size", 50_000),
                          query_adapter_callback=query_adapter)
    return sum(t.num_rows for t in resource_)


def main(argv: list[str]) -> None:
    name, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    started = (time.perf_counter(), time.process_time())
    rows = METHODS[name](args)
    ended = (time.perf_counter(), time.process_time())
    read = _READ_STARTED[0] if _READ_STARTED else started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": name, "rows": rows, "seconds": ended[0] - started[0],
                      "read_seconds": ended[0] - read[0], "read_cpu_seconds": ended[1] - read[1],
                      "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main(sys.argv[1:])
