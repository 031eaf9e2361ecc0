"""The fence around the binary read's C extension (extract/_binary.c, extract/native.py,
extract/text.py): what it relies on from mysqlclient's private API, the client-library check,
the misuses that crashed the process before (each run in a child process: a crash fails the
test instead of killing pytest; under scripts/sanitizer-tests.sh the child runs under
AddressSanitizer too), and the fallback to the text read with one warning."""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import subprocess
import sys
import threading
import time

import MySQLdb
import pyarrow as pa
import pytest

import plex_etl.extract
from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract import native
from plex_etl.extract.native import (
    CAPSULE_NAME,
    BinaryReadUnavailable,
    ClientLibrary,
    binary_module,
    binary_statement,
    client_libraries,
    library_mismatch,
    native_connection,
)
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import ExtractionError, PartitionStream
from plex_etl.extract.text import READER_VARIABLE

SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
TWO_ROWS = "SELECT 'a', 1 FROM DUAL UNION ALL SELECT 'b', 2"
KINDS = [("b", 0, 0), ("i", 0, 0)]


def test_mysqlclient_still_offers_what_the_adapter_relies_on():
    connection = MySQLdb._mysql.connect(**SERVER)
    capsule = native_connection(connection)
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.argtypes, is_valid.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
    assert is_valid(capsule, CAPSULE_NAME.encode()) == 1  # the name _binary.c checks
    assert connection.open  # the member _binary.c checks before each fetch
    connection.close()
    assert not connection.open
    with pytest.raises(MySQLdb.OperationalError):  # no capsule of a closed connection
        native_connection(connection)


def test_the_extension_links_mysqlclients_client_library():
    ours, theirs = client_libraries(binary_module())
    assert ours == theirs
    assert os.path.isfile(ours.path) and ours.version == MySQLdb._mysql.get_client_info()


def test_another_client_library_is_refused_naming_both():
    mariadb = ClientLibrary("/usr/lib/x86_64-linux-gnu/libmariadb.so.3", "3.3.20")
    assert library_mismatch(mariadb, mariadb) is None
    for other in (ClientLibrary("/usr/lib/x86_64-linux-gnu/libmysqlclient.so.21", "8.0.40"),
                  ClientLibrary(mariadb.path, "3.3.8")):
        message = library_mismatch(mariadb, other)
        assert str(mariadb) in message and str(other) in message


# Each: a misuse from Python, and the error it must raise instead of crashing.
MISUSES = {
    "fetch(0) first": ("statement.fetch(0)", "ValueError: max_rows must be >= 1"),
    "fetch after the connection closed mid-result": (
        "statement.fetch(1); connection.close(); statement.fetch(5)",
        "ValueError: the statement's connection is closed",
    ),
    "fetch after close": ("statement.close(); statement.fetch(5)", "ValueError: the statement is closed"),
    "a second __init__": (
        f"statement.__init__(connection, native_connection(connection), {TWO_ROWS!r}, {KINDS!r})",
        "RuntimeError: the statement is initialized already",
    ),
}


@pytest.mark.parametrize("misuse", MISUSES)
def test_misuse_raises_instead_of_crashing(misuse):
    code, error = MISUSES[misuse]
    script = (
        "import MySQLdb\n"
        "from plex_etl.extract.native import binary_statement, native_connection\n"
        f"connection = MySQLdb._mysql.connect(**{SERVER!r})\n"
        f"statement = binary_statement(connection, {TWO_ROWS!r}, {KINDS!r})\n"
        "try:\n"
        f"    {code}\n"
        "except Exception as exc:\n"
        "    print(f'{type(exc).__name__}: {exc}')\n"
        "statement.close()\n"  # and the statement still closes and frees cleanly
        "del statement\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == error


def test_close_during_a_fetch_is_refused():
    connection = MySQLdb._mysql.connect(**SERVER)
    # The first rows fill the server's network buffer and arrive at once; the last one waits a second.
    sql = "SELECT REPEAT('x', 1000), SLEEP(seq = 100) FROM mysql.seq_1_to_100"
    statement = binary_statement(connection, sql, [("b", 0, 0), ("i", 0, 0)])
    fetched = {}
    fetcher = threading.Thread(target=lambda: fetched.update(rows=statement.fetch(1000)[0]))
    started = time.monotonic()
    fetcher.start()
    time.sleep(0.3)  # the fetch waits on the server, its GIL released
    with pytest.raises(RuntimeError, match="being fetched by another thread"):
        statement.close()
    with pytest.raises(RuntimeError, match="being fetched by another thread"):
        statement.fetch(1)
    fetcher.join()
    assert fetched == {"rows": 100} and time.monotonic() - started > 0.9
    statement.close()
    connection.close()


@pytest.fixture
def without_extension(monkeypatch):
    """The process as if the extension were not built: its import fails."""
    monkeypatch.delattr(plex_etl.extract, "_binary", raising=False)
    monkeypatch.setitem(sys.modules, "plex_etl.extract._binary", None)
    native._load.cache_clear()
    yield
    native._load.cache_clear()


def test_without_the_extension_the_text_read_is_used_with_one_warning(
        demo_sources, demo_end_date, monkeypatch, caplog, without_extension):
    catalog, plan = load_source_catalog("plex")
    spec = replicated_table(catalog, plan, "factlineas")
    start = demo_end_date - dt.timedelta(days=5)

    def read() -> pa.Table:
        stream = PartitionStream(demo_sources["plex"], spec, start, demo_end_date)
        return pa.Table.from_batches(list(stream), stream.schema)

    monkeypatch.delenv(READER_VARIABLE, raising=False)
    with caplog.at_level(logging.WARNING, logger="plex_etl.extract.text"):
        first, second = read(), read()
    warnings = [r.getMessage() for r in caplog.records if r.name == "plex_etl.extract.text"]
    assert len(warnings) == 1 and "text protocol" in warnings[0] and "not built" in warnings[0], warnings
    assert first.num_rows > 0 and first.equals(second)

    monkeypatch.setenv(READER_VARIABLE, "binary")  # asked for explicitly: an error, no fallback
    with pytest.raises(ExtractionError, match="not built or does not load"):
        read()
    with pytest.raises(BinaryReadUnavailable):
        binary_module()

    monkeypatch.setenv(READER_VARIABLE, "fast")
    with pytest.raises(ExtractionError, match="PLEX_ETL_READER='fast': expected one of binary, text"):
        read()
