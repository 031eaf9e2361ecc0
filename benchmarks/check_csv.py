"""Check that the line read (one server-side line per row; a CSV line before issue 14) and the
per-column (tuple) read of PartitionStream agree exactly.

`python -m benchmarks.check_csv DATABASE`: every included table of the plex plan in that demo
database, read both ways over the demo's whole date range; the Arrow tables, the fixes
counted and the chunk sizes must be identical. A safety net for the fast path, next to
the fidelity tests (which compare checksums with MySQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from zoneinfo import ZoneInfo

import pyarrow as pa

from plex_etl.catalog.model import load_catalog
from plex_etl.catalog.plan import load_plan
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.sources import config_dir, get_source, with_database


def read(stream: PartitionStream) -> tuple[pa.Table, list[int], dict[str, int]]:
    batches = list(stream)
    table = pa.Table.from_batches(batches, stream.schema)
    return table, [b.num_rows for b in batches], dict(stream.fixes)


def main(database: str, days: int = 400) -> int:
    source = with_database(get_source("plex"), database)
    catalog = load_catalog(config_dir() / "plex.catalog.yaml")
    plan = load_plan(config_dir() / "plex.plan.yaml", "plex")
    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    failures = 0
    for table_plan in sorted(plan.included, key=lambda p: p.table):
        spec = replicated_table(catalog, plan, table_plan.table)
        start = today if table_plan.strategy == "snapshot" else today - dt.timedelta(days=days)
        fast = PartitionStream(source, spec, start, today)
        if fast.query.line_sql is None:
            print(f"{spec.name}: binary columns, tuple read only")
            continue
        slow = PartitionStream(source, spec, start, today)
        slow.query = dataclasses.replace(slow.query, line_sql=None)
        a, b = read(fast), read(slow)
        same = a[0].equals(b[0]) and a[1:] == b[1:]
        failures += not same
        print(f"{spec.name}: {a[0].num_rows} rows, {'identical' if same else 'DIFFERENT'}")
    return failures


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1]) else 0)
