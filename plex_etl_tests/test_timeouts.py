"""No hangs: a MySQL connection that goes silent fails within the source's read_timeout,
with a message naming source and table (issue 16), even where the driver's own socket timeout
would not end the wait, and even where the server cannot be reached to kill the query (issue 26).
The stall is a real frozen TCP path (plex_etl_tests/frozen_proxy.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from plex_etl import waits
from plex_etl.catalog.discover import read_structure
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.errors import is_transient
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import ExtractionError, ExtractionTimeout, PartitionStream
from plex_etl.mysql import connect, create_engine, raw_connection
from plex_etl.sources import SourceConfigError, get_source, load_sources, with_database
from plex_etl_tests.frozen_proxy import FrozenProxy

PREFIX = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")
MYSQL = ("127.0.0.1", 3306)


def server_source():
    """The configured plex source on its server's `mysql` database (exists on every server)."""
    return with_database(get_source("plex"), "mysql")


@pytest.fixture(scope="module")
def stall_database() -> Iterator[str]:
    """A table of 20,000 rows of 100 characters (about 2 MB to stream), and one of 100."""
    database = f"{PREFIX}_stall"
    engine = create_engine(server_source())
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        connection.execute(sa.text(f"CREATE DATABASE {database}"))
        connection.execute(sa.text(
            f"CREATE TABLE {database}.lineas (id INT PRIMARY KEY, texto VARCHAR(200)) DEFAULT CHARSET=utf8mb4"
        ))
        connection.execute(sa.text(
            f"INSERT INTO {database}.lineas SELECT seq, REPEAT(CHAR(65 + seq % 26), 100) FROM seq_1_to_20000"
        ))
        connection.execute(sa.text(f"CREATE TABLE {database}.lenta LIKE {database}.lineas"))
        connection.execute(sa.text(f"INSERT INTO {database}.lenta SELECT * FROM {database}.lineas WHERE id <= 100"))
    try:
        yield database
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        engine.dispose()


def lineas(database: str, table: str = "lineas"):
    direct = with_database(get_source("plex"), database)
    with connect(direct) as connection:
        catalog = read_structure(connection, "plex", database)
    plan = SourcePlan("plex", {table: TablePlan(table, strategy="snapshot", chunk_rows=100)})
    return direct, replicated_table(catalog, plan, table)


def read_all(stream: PartitionStream) -> int:
    return sum(batch.num_rows for batch in stream)


def thread_alive(thread_id: int) -> bool:
    with connect(server_source()) as connection:
        return bool(connection.execute(
            sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :i"), {"i": thread_id}
        ).scalar())


def deaf_driver(source):
    """A connection whose driver-side read timeout is a minute: only the reader's own deadline
    (the source's read_timeout, 2 s here) can end a stall, as when libmariadb's does not apply."""
    return raw_connection(dataclasses.replace(source, read_timeout=60, write_timeout=60))


def test_a_stalled_stream_fails_within_the_read_timeout_naming_source_and_table(stall_database):
    direct, spec = lineas(stall_database)
    today = dt.date.today()
    assert read_all(PartitionStream(direct, spec, today, today)) == 20_000

    with FrozenProxy(MYSQL, freeze_after=64 * 1024) as proxy:
        source = dataclasses.replace(direct, port=proxy.port, read_timeout=2, write_timeout=2)
        started = time.monotonic()
        with pytest.raises(ExtractionError) as error:
            read_all(PartitionStream(source, spec, today, today))
        elapsed = time.monotonic() - started
        assert proxy.frozen_connections == 1
    assert 2 <= elapsed < 4, elapsed
    message = str(error.value)
    assert message.startswith("plex.lineas ")
    assert "source 'plex'" in message and "for 2 s" in message and "read_timeout" in message
    assert is_transient(error.value)


def test_the_reader_s_own_deadline_ends_a_stall_and_kills_the_server_thread(stall_database, monkeypatch):
    """The driver would wait a minute: the read fails within 2 x read_timeout all the same, with
    an error naming source, table and rows read, its server thread killed, having logged the wait
    to the run's log (the stream's `progress`)."""
    monkeypatch.setattr(waits, "LOG_EVERY", 0.5)
    direct, spec = lineas(stall_database)
    today = dt.date.today()
    lines: list[str] = []
    with FrozenProxy(MYSQL, freeze_after=64 * 1024) as proxy:
        source = dataclasses.replace(direct, port=proxy.port, read_timeout=2, write_timeout=2)
        started = time.monotonic()
        with pytest.raises(ExtractionTimeout) as error:
            read_all(PartitionStream(source, spec, today, today, progress=lines.append, connect=deaf_driver))
        elapsed = time.monotonic() - started
        assert proxy.frozen_connections == 1
        message = str(error.value)
        thread_id = int(re.search(r"server thread (\d+) was killed", message).group(1))
        assert not thread_alive(thread_id)  # killed: gone before the error was raised
    assert 2 <= elapsed < 4, elapsed
    rows = int(re.search(r"([\d,]+) rows so far", message).group(1).replace(",", ""))
    assert 0 < rows < 20_000
    assert message.startswith("plex.lineas ") and "fetching rows" in message and "source 'plex'" in message
    assert "no data for 2 s" in message and "read_timeout" in message
    assert is_transient(error.value)
    waiting = [line for line in lines if "(waited " in line]
    assert waiting and all(w.startswith("plex.lineas ") and "rows so far" in w for w in waiting), waiting
    assert not [t for t in threading.enumerate() if t.name == "plex-etl-fetch"]


def test_a_stall_where_even_the_kill_cannot_reach_the_server_is_bounded_and_so_is_the_retry(stall_database):
    """The whole path freezes mid-stream: the KILL's own connection hangs too, and gives up within
    its own bound; the next attempt, through the same frozen path, fails within its bound too."""
    direct, spec = lineas(stall_database)
    today = dt.date.today()
    with FrozenProxy(MYSQL, freeze_after=64 * 1024) as proxy:
        source = dataclasses.replace(direct, port=proxy.port, read_timeout=2, write_timeout=2, connect_timeout=2)

        def freeze_all() -> None:  # once the stream's connection froze: nothing reaches the server
            deadline = time.monotonic() + 10
            while not proxy.frozen_connections and time.monotonic() < deadline:
                time.sleep(0.05)
            proxy.freeze()

        freezer = threading.Thread(target=freeze_all, daemon=True)
        freezer.start()
        started = time.monotonic()
        with pytest.raises(ExtractionTimeout) as error:
            read_all(PartitionStream(source, spec, today, today, connect=deaf_driver))
        elapsed = time.monotonic() - started
        freezer.join(timeout=10)
        assert 2 <= elapsed < 4, elapsed
        assert "could not be killed" in str(error.value) and "fetching rows" in str(error.value)

        started = time.monotonic()
        with pytest.raises(Exception) as retry:
            read_all(PartitionStream(source, spec, today, today, connect=deaf_driver))
        assert time.monotonic() - started < 2 * 2 + 1
        assert "source 'plex'" in str(retry.value) and is_transient(retry.value)


def test_a_statement_that_does_not_answer_is_given_up_and_killed(stall_database):
    """The server works longer than read_timeout before the first row (a materialized view that
    takes 10 s): the read is given up after read_timeout though the driver would wait on, and
    the query is killed."""
    direct, spec = lineas(stall_database, "lenta")
    with connect(direct) as connection:
        connection.execute(sa.text("RENAME TABLE lenta TO lenta_datos"))
        connection.execute(sa.text(
            "CREATE ALGORITHM=TEMPTABLE VIEW lenta AS SELECT id, texto FROM lenta_datos WHERE SLEEP(0.1) = 0"
        ))
        connection.commit()
    source = dataclasses.replace(direct, read_timeout=2, write_timeout=2)
    today = dt.date.today()
    started = time.monotonic()
    with pytest.raises(ExtractionTimeout) as error:
        read_all(PartitionStream(source, spec, today, today, connect=deaf_driver))
    elapsed = time.monotonic() - started
    message = str(error.value)
    thread_id = int(re.search(r"server thread (\d+) was killed", message).group(1))
    assert not thread_alive(thread_id)
    assert 2 <= elapsed < 4, elapsed
    assert message.startswith("plex.lenta ") and "running the rows statement" in message and "0 rows so far" in message


def test_sqlalchemy_and_raw_connections_give_up_after_the_read_timeout():
    source = dataclasses.replace(server_source(), read_timeout=1)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), connect(source) as connection:
        connection.execute(sa.text("SELECT SLEEP(5)"))
    assert time.monotonic() - started < 4
    connection = raw_connection(source)
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="Lost connection"):
            connection.query("SELECT SLEEP(5)")
            connection.store_result()
    finally:
        connection.close()
    assert time.monotonic() - started < 4


def test_timeouts_are_read_from_sources_yaml(tmp_path: Path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  erp:\n    read_timeout: 120\n  crm: {}\n")
    sources = load_sources(path)
    assert (sources["erp"].read_timeout, sources["erp"].write_timeout, sources["erp"].connect_timeout) == (
        120, 600, 10,
    )
    assert sources["crm"].read_timeout == 600
    path.write_text("sources:\n  erp:\n    read_timeout: 0\n")
    with pytest.raises(SourceConfigError) as error:
        load_sources(path)
    assert str(path) in str(error.value) and "'erp'" in str(error.value) and "read_timeout" in str(error.value)
