"""No hangs: a MySQL connection that goes silent fails within the source's read_timeout,
with a message naming source and table (issue 16)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from plex_etl.catalog.discover import read_structure
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import ExtractionError, PartitionStream
from plex_etl.mysql import connect, create_engine, raw_connection
from plex_etl.sources import SourceConfigError, get_source, load_sources, with_database

PREFIX = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")
MYSQL = ("127.0.0.1", 3306)


def server_source():
    """The configured plex source on its server's `mysql` database (exists on every server)."""
    return with_database(get_source("plex"), "mysql")


class StallingProxy:
    """A TCP proxy on 127.0.0.1 that forwards everything the client sends, but stops forwarding
    the server's bytes after `forward_bytes` (without closing anything): a silent stall.

    Every loop wakes up at least every 0.1 s and stops when the proxy is closed; threads are
    joined with a deadline, so the proxy never outlives its test.
    """

    def __init__(self, target: tuple[str, int], forward_bytes: int) -> None:
        self.target = target
        self.forward_bytes = forward_bytes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.stalled = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = [self.listener]

    def __enter__(self) -> StallingProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        assert not any(t.is_alive() for t in self.threads), "proxy threads did not stop"

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            self.sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, None)
            self._spawn(self._pump, upstream, client, self.forward_bytes)

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        while not self.stopped.is_set():
            if limit is not None and sent >= limit:
                self.stalled.set()
                self.stopped.wait(0.1)  # stop forwarding; keep both connections open
                continue
            readable, _, _ = select.select([source], [], [], 0.1)
            if not readable:
                continue
            try:
                data = source.recv(65536 if limit is None else min(65536, limit - sent))
                if not data:
                    return
                sink.sendall(data)
            except OSError:
                return
            sent += len(data)


@pytest.fixture(scope="module")
def stall_database() -> Iterator[str]:
    """A table of 20,000 rows of 100 characters (about 2 MB to stream)."""
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
    try:
        yield database
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        engine.dispose()


def test_a_stalled_stream_fails_within_the_read_timeout_naming_source_and_table(stall_database):
    direct = with_database(get_source("plex"), stall_database)
    with connect(direct) as connection:
        catalog = read_structure(connection, "plex", stall_database)
    plan = SourcePlan("plex", {"lineas": TablePlan("lineas", strategy="snapshot", chunk_rows=1000)})
    spec = replicated_table(catalog, plan, "lineas")
    today = dt.date.today()
    assert sum(batch.num_rows for batch in PartitionStream(direct, spec, today, today)) == 20_000

    with StallingProxy(MYSQL, forward_bytes=64 * 1024) as proxy:
        source = dataclasses.replace(direct, port=proxy.port, read_timeout=2, write_timeout=2)
        stream = PartitionStream(source, spec, today, today)
        started = time.monotonic()
        with pytest.raises(ExtractionError) as error:
            for _ in stream:
                pass
        elapsed = time.monotonic() - started
        assert proxy.stalled.is_set()
    assert 2 <= elapsed < 8, elapsed
    message = str(error.value)
    assert message.startswith("plex.lineas ")
    assert "source 'plex'" in message and "for 2 s" in message and "read_timeout" in message


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
