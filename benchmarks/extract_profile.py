"""Issue 14: where a read of the bench table spends its CPU, server and client, per statement.

    PLEX_ETL_BENCH_DATABASE=plexetl_ext_bench .venv/bin/python -m benchmarks.extract_profile --runs 3

Needs the MySQL server on this machine (it reads the CPU time of the server thread that runs
each statement: information_schema.PROCESSLIST.TID, a MariaDB column, and /proc). Each
statement is fetched to the end with `fetch_row` and nothing else (no conversion): wall
seconds, this process's CPU and the server thread's CPU, medians of interleaved rounds.
Statements: the per-day COUNT the reader ran before issue 14, the CSV line it read then
(rebuilt here: quoted text, IFNULL 'NULL'), the plain text protocol (`rows_sql`), the same
statement over the binary protocol as the reader reads it now (`extract/_binary.c`, its
column buffers filled, no conversion), and the first column alone. (The 0xFF line of the
one-pass text reader was removed with that reader.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plex_etl.extract.spec import ReplicatedTable

REPO = Path(__file__).resolve().parents[1]


def _csv_sql(spec: ReplicatedTable) -> str:
    """The CSV line of the reader before issue 14 (text quoted, quotes doubled, NULL unquoted)."""
    from plex_etl.catalog.relationships import quote

    parts = []
    for column, mapped in zip(spec.table.columns, spec.mapped, strict=True):
        expr = mapped.select_sql.format(column=f"t.{quote(column.name)}")
        if mapped.rule in ("text", "json", "spatial_wkt"):
            expr = f"CONCAT('\"', REPLACE(CONVERT({expr} USING utf8mb4), '\"', '\"\"'), '\"')"
        parts.append(f"IFNULL({expr}, 'NULL')")
    parts.append(f"IFNULL(DATE '{dt.date.today().isoformat()}', 'NULL')")
    return f"SELECT CONCAT_WS(',', {', '.join(parts)}) FROM {quote(spec.table.name)} t"


def _server_pid() -> int:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() in {"mariadbd", "mysqld"} and \
                        "--port" not in Path(f"/proc/{pid}/cmdline").read_text():
                    return int(pid)
            except OSError:
                continue
    raise SystemExit("no local mariadbd/mysqld on the default port")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-pid", type=int, help="the server's pid (default: the mariadbd without --port)")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_table import bench_spec, ensure_bench_table
    from plex_etl.extract.sql import partition_query
    from plex_etl.mysql import raw_connection

    source = ensure_bench_table(options.rows)
    spec = bench_spec(source)
    today = dt.date.today()
    query = partition_query(spec, today, today)
    server = options.server_pid or _server_pid()
    tick = os.sysconf("SC_CLK_TCK")

    def thread_cpu(tid: int) -> float:
        fields = Path(f"/proc/{server}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    def own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def fetch(sql: str, binary: bool = False) -> tuple[float, float, float]:
        from plex_etl.extract._binary import Statement

        from plex_etl.extract.stream import column_kinds

        connection = raw_connection(source)
        try:
            connection.query("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
            tid = int(connection.store_result().fetch_row()[0][0])
            started, client, served = time.perf_counter(), own_cpu(), thread_cpu(tid)
            if binary:
                statement = Statement(connection, sql, [*column_kinds(spec.mapped), ("d", 0, 0)])
                while statement.fetch(8192)[0]:
                    pass
                statement.close()
            else:
                connection.query(sql)
                result = connection.use_result()
                while result.fetch_row(maxrows=8192, how=0):
                    pass
            return time.perf_counter() - started, own_cpu() - client, thread_cpu(tid) - served
        finally:
            connection.close()

    statements = {
        "COUNT per day (before: a second pass)": query.count_sql,
        "CSV line (before)": _csv_sql(spec),
        "text protocol, one value per column (rows_sql)": query.rows_sql,
        "binary protocol (rows_sql, the reader now)": query.rows_sql,
        "first column only": f"SELECT t.`{spec.table.columns[0].name}` FROM `{spec.table.name}` t",
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in statements}
    for _ in range(options.runs):
        for name, sql in statements.items():
            results[name].append(fetch(sql, binary=name.startswith("binary")))
    print(f"\n{options.rows:,} rows, fetch only, medians of {options.runs} interleaved rounds\n")
    print("| statement | wall s | client CPU s | server thread CPU s |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in results.items():
        wall, client, served = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"| {name} | {wall:.2f} | {client:.2f} | {served:.2f} |")


if __name__ == "__main__":
    main()
