"""Which failures are worth another attempt (plex_etl.errors), on errors as they really arise:
MariaDB's own refusals, deadlocks and lock waits, a killed connection, a closed port, the type
map's conversion errors, a full device (/dev/full); BigQuery's answers as google-api-core builds
them from their HTTP status and reasons (no emulator can be made to answer 503 or 429)."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as gexc

from plex_etl.errors import is_transient
from plex_etl.mysql import SourceConnectionError, connect, create_engine, raw_connection
from plex_etl.sources import get_source, with_database
from plex_etl.warehouse.base import WarehouseError, WarehouseTimeout, WarehouseValueError


@pytest.fixture(scope="module")
def database():
    """A scratch database of this session with one InnoDB table of two rows."""
    name = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_errors"
    server = get_source("plex")
    admin = create_engine(with_database(server, "information_schema"))
    with admin.begin() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        c.execute(sa.text(f"CREATE DATABASE `{name}`"))
    source = with_database(server, name)
    engine = create_engine(source, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"))
        c.execute(sa.text("INSERT INTO t VALUES (1, 0), (2, 0)"))
    yield source
    engine.dispose()
    with admin.begin() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # the test inspects whatever was raised
        return exc
    raise AssertionError("nothing was raised")


def test_a_refused_login_is_not_transient(database):
    wrong = replace(database, user="plexetl_no_such_user")
    error = caught(lambda: connect(wrong).__enter__())
    assert isinstance(error, SourceConnectionError) and "Access denied" in str(error)
    assert not is_transient(error)
    error = caught(lambda: raw_connection(wrong))  # the extraction's driver
    assert "Access denied" in str(error) and not is_transient(error)


def test_a_closed_port_and_a_killed_connection_are_transient(database):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = caught(lambda: raw_connection(replace(database, port=port)))
    assert "Can't connect" in str(error) and is_transient(error)

    victim = raw_connection(database)
    victim.query("SELECT CONNECTION_ID()")
    (thread,), = victim.store_result().fetch_row()
    with create_engine(database).connect() as admin:
        admin.execute(sa.text(f"KILL {int(thread)}"))
    error = caught(lambda: victim.query("SELECT 1"))
    assert error.args[0] in (2006, 2013) and is_transient(error)
    assert not is_transient(WarehouseError("t: failed"))  # nothing recognised: a retry must be earned


def test_a_lock_wait_timeout_and_a_deadlock_are_transient(database):
    engine = create_engine(database)
    with engine.connect() as holder, engine.connect() as waiter:
        holder.execute(sa.text("SELECT * FROM t WHERE id = 1 FOR UPDATE"))
        waiter.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
        error = caught(lambda: waiter.execute(sa.text("UPDATE t SET v = 1 WHERE id = 1")))
        assert "Lock wait timeout" in str(error) and is_transient(error)
        holder.rollback()
        waiter.rollback()

    with engine.connect() as a, engine.connect() as b:
        a.execute(sa.text("UPDATE t SET v = 2 WHERE id = 1"))
        b.execute(sa.text("UPDATE t SET v = 2 WHERE id = 2"))
        errors: list[BaseException] = []

        def a_wants_bs_row() -> None:
            try:
                a.execute(sa.text("UPDATE t SET v = 3 WHERE id = 2"))
            except sa.exc.DBAPIError as exc:
                errors.append(exc)

        crossing = threading.Thread(target=a_wants_bs_row)
        crossing.start()
        threading.Event().wait(0.5)  # a now waits for b's row
        try:
            b.execute(sa.text("UPDATE t SET v = 3 WHERE id = 1"))  # closes the cycle
        except sa.exc.DBAPIError as exc:
            errors.append(exc)
        b.rollback()
        crossing.join(timeout=30)
        a.rollback()
    deadlocks = [e for e in errors if "Deadlock" in str(e)]
    assert deadlocks and all(is_transient(e) for e in deadlocks)
    engine.dispose()


def test_conversion_errors_and_a_full_device_are_not_transient():
    import pyarrow as pa

    from plex_etl.catalog.model import Column
    from plex_etl.typemap import ValueConversionError, convert, map_column

    column = map_column(Column(name="Activo", ordinal=1, column_type="tinyint(1)", data_type="tinyint",
                               nullable=True), override="bool")
    error = caught(lambda: convert(pa.array([b"0", b"2"], pa.binary()), column, "Activo"))
    assert isinstance(error, ValueConversionError) and "Activo" in str(error) and "2" in str(error)
    assert not is_transient(error)
    wrapped = caught(_raise_from(WarehouseError("plex.t: load failed"), error))
    assert not is_transient(wrapped)

    def write_full() -> None:
        with open("/dev/full", "wb") as full:
            full.write(b"x" * 65536)
            full.flush()

    error = caught(write_full)
    assert isinstance(error, OSError) and "No space left" in str(error)
    assert not is_transient(caught(_raise_from(WarehouseError("t: cannot write the staging file"), error)))


def test_bigquery_answers_by_status_and_reason():
    transient = [
        gexc.from_http_status(500, "backend error"), gexc.from_http_status(503, "unavailable"),
        gexc.from_http_status(429, "too many"), gexc.DeadlineExceeded("slow"),
        gexc.Forbidden("Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]),
        gexc.BadRequest("job failed", errors=[{"reason": "jobBackendError"}]),
        gexc.RetryError("gave up after 300 s", cause=gexc.ServiceUnavailable("x")),
    ]
    deterministic = [
        gexc.BadRequest("Invalid BIGNUMERIC value", errors=[{"reason": "invalidQuery"}]),
        gexc.Forbidden("Quota exceeded", errors=[{"reason": "quotaExceeded"}]),
        gexc.NotFound("dataset"), gexc.Unauthorized("bad credentials"),
    ]
    for error in transient:
        assert is_transient(error), error
        assert is_transient(caught(_raise_from(WarehouseError("t: load failed"), error))), error
    for error in deterministic:
        assert not is_transient(error), error
    # A value BigQuery cannot hold stays deterministic whatever the failed script answered.
    value = caught(_raise_from(WarehouseValueError("t: column c: MySQL value 1e70 does not convert"),
                               gexc.from_http_status(500, "emulator")))
    assert not is_transient(value)
    assert is_transient(WarehouseTimeout("t: BigQuery job still running after 300 s; cancelled"))
    assert is_transient(caught(_raise_from(WarehouseError("t: wait"), TimeoutError())))


def _raise_from(outer: BaseException, inner: BaseException):
    def raise_it() -> None:
        raise outer from inner

    return raise_it
