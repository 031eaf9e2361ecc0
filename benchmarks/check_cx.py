"""Compare the connectorx prototype (benchmarks/cx_read.py) with PartitionStream, table by table.

`python -m benchmarks.check_cx DATABASE [SOURCE]`: every included table of SOURCE's plan (default
plex) in that demo database, over the last 400 days; the two Arrow tables must be equal.
"""

from __future__ import annotations

import datetime as dt
import sys
from zoneinfo import ZoneInfo

import pyarrow as pa

from benchmarks.cx_read import cx_batches
from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.sources import get_source, with_database


def main(database: str, source_name: str = "plex", days: int = 400) -> int:
    source = with_database(get_source(source_name), database)
    catalog, plan = load_source_catalog(source_name)
    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    failures = 0
    for table_plan in sorted(plan.included, key=lambda p: p.table):
        spec = replicated_table(catalog, plan, table_plan.table)
        start = today if table_plan.strategy == "snapshot" else today - dt.timedelta(days=days)
        stream = PartitionStream(source, spec, start, today)
        if any(m.rule == "bytes" for m in spec.mapped):
            print(f"{spec.name}: binary columns (the prototype does not read them), skipped")
            continue
        ours = pa.Table.from_batches(list(stream), spec.target.arrow_schema)
        try:
            theirs = pa.Table.from_batches(list(cx_batches(source, spec, start, today)), spec.target.arrow_schema)
        except BaseException as exc:  # connectorx panics surface as PanicException (a BaseException)
            failures += 1
            print(f"{spec.name}: connectorx FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        same = ours.equals(theirs)
        failures += not same
        detail = "" if same else " differ: " + ", ".join(
            n for n in ours.column_names if not ours.column(n).equals(theirs.column(n))
        ) if ours.num_rows == theirs.num_rows else f" rows {ours.num_rows} vs {theirs.num_rows}"
        print(f"{spec.name}: {ours.num_rows} rows, {'identical' if same else 'DIFFERENT' + detail}")
    print(f"{failures} table(s) differ or failed")
    return failures


if __name__ == "__main__":
    sys.exit(1 if main(*sys.argv[1:]) else 0)
