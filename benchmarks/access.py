"""Rows MySQL examines for a one-day partition, before and after key-bounded reads (issue 12).

    .venv/bin/python -m benchmarks.access                       # builds plexetl_bench_plex_0_01 if missing
    .venv/bin/python -m benchmarks.access --database plexetl_hacc_plex_0_01 --runs 3

For each table, one whole partition read as the pipeline runs it (PartitionStream: the key
range probes, the per-day counts and the rows, in one snapshot), once with today's query
(PLEX_ETL_KEY_BOUNDS=off) and once key-bounded. MySQL's `Handler_read%` session counters
are summed before and after on the stream's own connection: every row read through an
index or a scan counts once. Also the rows query alone, the way EXPLAIN sees one read.
No index is added to the database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from typing import Any

from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.access import KEY_BOUNDS_ENV, choose_access, runner
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import raw_connection
from plex_etl.sources import get_source, with_database

TABLES = ("factcabecera", "factlineas", "asientos_detalle", "reclineas")


def handler_reads(connection: Any) -> int:
    return sum(int(v) for _, v in runner(connection)("SHOW SESSION STATUS LIKE 'Handler_read%'"))


class Counter:
    """Handler_read totals of the stream's connection, when it opened and when it closed."""

    before = 0
    after = 0


def measure(source: Any, spec: Any, day: dt.date, bounded: bool) -> dict[str, Any]:
    os.environ[KEY_BOUNDS_ENV] = "on" if bounded else "off"
    counter = Counter()
    stream = PartitionStream(source, spec, day, day, connect=_wrap(counter))
    started = time.perf_counter()
    rows = sum(b.num_rows for b in stream)
    seconds = time.perf_counter() - started
    # The rows query alone, with the key range the stream found.
    connection = raw_connection(source)
    run = runner(connection)
    access = choose_access(run, spec, day, day)
    sql = partition_query(spec, day, day, access.keys if bounded else None).rows_sql
    before = handler_reads(connection)
    run(sql)
    query_reads = handler_reads(connection) - before
    connection.close()
    return {"rows": rows, "stream_reads": counter.after - counter.before, "query_reads": query_reads,
            "seconds": seconds, "keys": stream.access.keys if stream.access else None}


def _wrap(counter: Counter) -> Any:
    class Wrapped:
        def __init__(self, connection: Any) -> None:
            self._c = connection

        def __getattr__(self, name: str) -> Any:
            return getattr(self._c, name)

        def close(self) -> None:
            counter.after = handler_reads(self._c)
            self._c.close()

    def connect(source: Any) -> Any:
        connection = raw_connection(source)
        counter.before = handler_reads(connection)
        return Wrapped(connection)

    return connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="plexetl_bench_plex_0_01")
    parser.add_argument("--day", help="the partition (default: the middle of the demo's 60 days)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    source = with_database(get_source("plex"), args.database)
    catalog, plan = load_source_catalog("plex")
    connection = raw_connection(source)
    run = runner(connection)
    if not run("SHOW TABLES LIKE 'factcabecera'"):
        raise SystemExit(f"{args.database}: build it first (plex_etl.demo.builder.build_demo, scale 0.01)")
    ((end_date,),) = run("SELECT end_date FROM _plex_etl_demo")
    connection.close()
    end_date = dt.date.fromisoformat(end_date.decode())
    day = dt.date.fromisoformat(args.day) if args.day else end_date - dt.timedelta(days=30)
    print(f"database {args.database}, partition {day}, medians of {args.runs} runs\n")
    print("| table | rows returned | rows query: examined before | after | after / rows | whole read "
          "(probes + counts + rows): examined before | after | after / rows | seconds before | after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in TABLES:
        spec = replicated_table(catalog, plan, name)
        results = {b: [measure(source, spec, day, b) for _ in range(args.runs)] for b in (False, True)}
        before, after = results[False][0], results[True][0]
        assert before["rows"] == after["rows"], name
        rows = after["rows"]
        secs = {b: statistics.median(r["seconds"] for r in results[b]) for b in results}
        print(f"| {name} | {rows:,} | {before['query_reads']:,} | {after['query_reads']:,} | "
              f"{after['query_reads'] / rows:.2f}x | {before['stream_reads']:,} | {after['stream_reads']:,} | "
              f"{after['stream_reads'] / rows:.2f}x | {secs[False]:.3f} | {secs[True]:.3f} |")
    os.environ.pop(KEY_BOUNDS_ENV, None)


if __name__ == "__main__":
    main()
