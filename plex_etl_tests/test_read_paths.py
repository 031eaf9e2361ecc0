"""The binary read (prepared statement, extract/_binary.c) and the text read (the same statement
through the text protocol, extract/text.py, the fallback) give identical Arrow data, fixes and
chunks, for every demo table (binary columns included) and for awkward text and bytes (quotes,
separators, latin1 'þ' and 'ÿ', values longer than the fetch's row buffer); and the per-day
counts tallied from the rows are the server's, or the read fails."""

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from plex_etl.catalog.discover import read_structure
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract import stream as stream_module
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import ExtractionError, PartitionStream, _Fetcher
from plex_etl.extract.text import READER_VARIABLE
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import with_database

AWKWARD = [
    'comillas "dobles" y \'simples\'', "coma, coma", "línea\r\nnueva", "tab\there", "NULL", "\\N", "",
    "Núñez Peña Córdoba", "emoji 💊🏥", "barra \\ invertida", " espacios ", '"', ",", "\n",
    "þ", "ÿ", "ÿþ, þÿ", "ñ" * 300, "x" * 5000,  # longer than the 256 bytes a fetch holds in the row
]


def both_ways(monkeypatch, source, spec, start, end):
    """The read by the binary read, then by the text read: (Arrow table, chunk sizes, fixes) each."""
    reads = []
    for reader in ("binary", "text"):
        monkeypatch.setenv(READER_VARIABLE, reader)
        stream = PartitionStream(source, spec, start, end)
        batches = list(stream)
        reads.append((pa.Table.from_batches(batches, stream.schema), [b.num_rows for b in batches], dict(stream.fixes)))
    return reads


@pytest.mark.parametrize("source_name", ["plex", "quantio"])
def test_binary_and_text_read_agree_on_every_demo_table(demo_sources, demo_end_date, source_name, monkeypatch):
    source = demo_sources[source_name]
    catalog, plan = load_source_catalog(source_name)
    compared = 0
    for table_plan in sorted(plan.included, key=lambda p: p.table):
        small = dataclasses.replace(plan, tables={**plan.tables, table_plan.table: dataclasses.replace(
            table_plan, chunk_rows=1000)})
        spec = replicated_table(catalog, small, table_plan.table)
        start = demo_end_date if table_plan.strategy == "snapshot" else demo_end_date - dt.timedelta(days=40)
        (fast, fast_chunks, fast_fixes), (slow, slow_chunks, slow_fixes) = both_ways(
            monkeypatch, source, spec, start, demo_end_date
        )
        assert fast.equals(slow), spec.name
        assert (fast_chunks, fast_fixes) == (slow_chunks, slow_fixes), spec.name
        compared += 1
    assert compared == len(plan.included) >= (40 if source_name == "plex" else 6)


@pytest.mark.parametrize("charset", ["latin1", "utf8mb4"])
def test_text_that_breaks_naive_csv_survives(demo_sources, demo_end_date, charset, monkeypatch):
    base = demo_sources["quantio"]
    source = with_database(base, f"{base.database}_paths_{charset}")  # the session's prefix: parallel sessions differ
    engine = create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {source.database}"))
        connection.execute(sa.text(f"CREATE DATABASE {source.database}"))
        connection.execute(sa.text(
            f"CREATE TABLE {source.database}.notas (id INT PRIMARY KEY, texto VARCHAR(5000), nota TEXT, "
            f"importe DECIMAL(10,2), vacio VARCHAR(5) NOT NULL DEFAULT '', crudo BLOB) DEFAULT CHARSET={charset}"
        ))
        values = [v for v in AWKWARD if charset == "utf8mb4" or "💊" not in v]
        for i, value in enumerate(values):
            connection.execute(
                sa.text(f"INSERT INTO {source.database}.notas (id, texto, nota, importe, crudo) "
                        "VALUES (:i, :t, :n, :m, :c)"),
                {"i": i, "t": value, "n": None if i % 3 else value, "m": i / 4, "c": bytes(range(i * 37 % 256)) * i},
            )
    try:
        with connect(source) as connection:
            catalog = read_structure(connection, "lab", source.database)
        plan = SourcePlan("lab", {"notas": TablePlan("notas", strategy="snapshot", chunk_rows=4)})
        spec = replicated_table(catalog, plan, "notas")
        (fast, chunks, _), (slow, slow_chunks, _) = both_ways(monkeypatch, source, spec, demo_end_date, demo_end_date)
        assert fast.equals(slow) and chunks == slow_chunks
        assert fast.column("texto").to_pylist() == values
        assert fast.column("nota").to_pylist() == [None if i % 3 else v for i, v in enumerate(values)]
        assert fast.column("vacio").to_pylist() == [""] * len(values)  # fetches whose column has no bytes
        assert fast.column("crudo").to_pylist() == [bytes(range(i * 37 % 256)) * i for i in range(len(values))]
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {source.database}"))


def _day_counts(source, stream):
    with create_engine(source).connect() as connection:
        return {d: n for d, n in connection.execute(sa.text(stream.query.count_sql)) if n}


def test_counts_are_the_snapshot_counts(demo_sources, demo_end_date):
    catalog, plan = load_source_catalog("plex")
    spec = replicated_table(catalog, plan, "factlineas")
    stream = PartitionStream(demo_sources["plex"], spec, demo_end_date - dt.timedelta(days=10), demo_end_date)
    rows = sum(batch.num_rows for batch in stream)
    assert stream.snapshot_counts == _day_counts(demo_sources["plex"], stream)
    assert len(stream.snapshot_counts) > 5 and stream.expected_rows == rows


def test_a_row_lost_before_the_tally_fails_the_read(demo_sources, demo_end_date, monkeypatch):
    catalog, plan = load_source_catalog("plex")
    spec = replicated_table(catalog, plan, "factlineas")
    fetched = stream_module.fetched_arrays
    monkeypatch.setattr(stream_module, "fetched_arrays",
                        lambda rows, *args: [a[:-1] for a in fetched(rows, *args)])
    stream = PartitionStream(demo_sources["plex"], spec, demo_end_date - dt.timedelta(days=10), demo_end_date)
    with pytest.raises(ExtractionError, match=r"the server sent [0-9,]+ rows but [0-9,]+ were read"):
        list(stream)


def test_a_fetch_seen_twice_fails_the_read(demo_sources, demo_end_date, monkeypatch):
    catalog, plan = load_source_catalog("plex")
    small = dataclasses.replace(plan, tables={**plan.tables, "factlineas": dataclasses.replace(
        plan.tables["factlineas"], chunk_rows=100)})
    spec = replicated_table(catalog, small, "factlineas")
    put = _Fetcher._put

    def twice(self, item):
        return put(self, item) and (isinstance(item, BaseException) or item[0] != 1 or put(self, item))

    monkeypatch.setattr(_Fetcher, "_put", twice)
    stream = PartitionStream(demo_sources["plex"], spec, demo_end_date - dt.timedelta(days=10), demo_end_date)
    with pytest.raises(ExtractionError, match="fetch 1 arrived where fetch 2 was due"):
        list(stream)
