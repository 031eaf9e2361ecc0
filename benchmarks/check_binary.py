"""Check that the binary read (PartitionStream) gives exactly the values of the text protocol.

`python -m benchmarks.check_binary DATABASE [SOURCE] [--ref CHECKOUT]`: every included table of
SOURCE's plan (default plex) in that demo database, over the last 400 days, read by
PartitionStream with the binary read and with the text read (PLEX_ETL_READER=text,
extract/text.py: the same statement, snapshot and tally, its rows fetched through
mysqlclient's text protocol as tuples of bytes and converted by the type map: the per-column
read the reader had before the binary read, now its fallback). With `--ref`, also with a
checkout of an earlier reader (e.g. `git archive main | tar -x -C /tmp/ref-main`), run in a
subprocess on the same tables. The Arrow tables, the fixes counted and the chunk sizes must
be identical. A safety net next to the fidelity tests (which compare checksums with MySQL).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.sources import get_source, with_database


@contextlib.contextmanager
def text_read() -> Iterator[None]:
    """Streams iterated inside read through the text protocol (extract/text.py)."""
    from plex_etl.extract.text import READER_VARIABLE  # here: a --ref checkout may predate it

    before = os.environ.get(READER_VARIABLE)
    os.environ[READER_VARIABLE] = "text"
    try:
        yield
    finally:
        if before is None:
            del os.environ[READER_VARIABLE]
        else:
            os.environ[READER_VARIABLE] = before


def read(stream: PartitionStream) -> tuple[pa.Table, list[int], dict[str, int]]:
    batches = list(stream)
    table = pa.Table.from_batches(batches, stream.schema)
    return table, [b.num_rows for b in batches], dict(stream.fixes)


def _streams(database: str, source_name: str, days: int) -> Iterator[tuple[str, PartitionStream]]:
    source = with_database(get_source(source_name), database)
    catalog, plan = load_source_catalog(source_name)
    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    for table_plan in sorted(plan.included, key=lambda p: p.table):
        spec = replicated_table(catalog, plan, table_plan.table)
        start = today if table_plan.strategy == "snapshot" else today - dt.timedelta(days=days)
        yield spec.name, PartitionStream(source, spec, start, today)


def dump(database: str, source_name: str, days: int, directory: str) -> None:
    """Write every table's read (this checkout's reader) as Arrow IPC files in `directory`."""
    for name, stream in _streams(database, source_name, days):
        table, chunks, fixes = read(stream)
        table = table.replace_schema_metadata({"chunks": repr(chunks), "fixes": repr(sorted(fixes.items()))})
        with pa.OSFile(os.path.join(directory, f"{name}.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def _from_ref(ref: str, database: str, source_name: str, days: int, directory: str) -> None:
    code = ("import sys; from benchmarks.check_binary import dump; "
            "dump(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])")
    # The ref checkout may predate this module: run this file's dump with the ref's plex_etl.
    here = Path(__file__).resolve().parents[1]
    shim = Path(directory) / "shim"
    (shim / "benchmarks").mkdir(parents=True)
    (shim / "benchmarks" / "__init__.py").write_text("")
    (shim / "benchmarks" / "check_binary.py").write_text((here / "benchmarks" / "check_binary.py").read_text())
    env = {**os.environ, "PYTHONPATH": f"{shim}:{ref}", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-c", code, database, source_name, str(days), directory], env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database")
    parser.add_argument("source", nargs="?", default="plex")
    parser.add_argument("--ref", help="a checkout of an earlier reader to compare with as well")
    parser.add_argument("--days", type=int, default=400)
    options = parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory() as directory:
        if options.ref:
            _from_ref(options.ref, options.database, options.source, options.days, directory)
        for name, stream in _streams(options.database, options.source, options.days):
            ours = read(stream)
            with text_read():
                text = read(PartitionStream(stream.source, stream.spec, stream.start, stream.end))
            verdicts = {"text protocol": ours[0].equals(text[0]) and ours[1:] == text[1:]}
            if options.ref:
                theirs = pa.ipc.open_file(os.path.join(directory, f"{name}.arrow")).read_all()
                meta = theirs.schema.metadata
                verdicts["ref"] = (ours[0].equals(theirs.replace_schema_metadata(None))
                                   and repr(ours[1]).encode() == meta[b"chunks"]
                                   and repr(sorted(ours[2].items())).encode() == meta[b"fixes"])
            failures += not all(verdicts.values())
            print(f"{name}: {ours[0].num_rows} rows, " + ", ".join(
                f"{'identical to' if same else 'DIFFERENT from'} {what}" for what, same in verdicts.items()))
    print(f"{failures} table(s) differ")
    return failures


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
