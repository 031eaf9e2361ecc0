"""Connections to a MySQL source.

Two drivers, one set of connection parameters:
- SQLAlchemy + PyMySQL for everything that is not the bulk read (discovery, counts,
  demo builds, checks): pure Python, portable;
- mysqlclient (libmariadb, C) for the streaming extraction only, where per-row
  decoding cost decides throughput (docs/benchmarks.md, *Extraction*).
Errors are re-raised as `SourceConnectionError`, whose message names the source and
never contains the password.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from plex_etl.sources import Credentials, Source, SourceConfigError, resolve_credentials

if TYPE_CHECKING:  # imported where used: loading Definitions needs no SQLAlchemy
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine


class SourceConnectionError(RuntimeError):
    """A source could not be reached or refused the credentials."""


def scrub(message: str, credentials: Credentials) -> str:
    """Remove the password from any text that might carry it (driver messages, URLs)."""
    if credentials.password:
        message = message.replace(str(credentials.password), "********")
    return message


def _check_tls_files(source: Source) -> None:
    ca_file = source.tls.ca_file
    if source.tls.enabled and ca_file and not os.path.isfile(ca_file):
        raise SourceConfigError(f"{source.describe()}: TLS ca_file {ca_file} does not exist or is not a file")


def _hint(source: Source, message: str) -> str:
    """What to check when the server refuses the login: an unset password variable."""
    env = source.password.env
    if "Access denied" in message and env and env not in os.environ:
        return f" (the password comes from environment variable {env}, which is not set)"
    return ""


def tls_context(source: Source) -> ssl.SSLContext | None:
    """The TLS context of `sources.yaml`'s `tls` (None when off); given to PyMySQL it makes TLS
    required: a server without it refuses the connection instead of serving it in clear."""
    if not source.tls.enabled:
        return None
    _check_tls_files(source)
    try:
        context = ssl.create_default_context(cafile=source.tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SourceConfigError(f"{source.describe()}: TLS ca_file {source.tls.ca_file}: {exc}") from None
    if not source.tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def create_engine(source: Source, *, local_infile: bool = False, **engine_options: Any) -> Engine:
    """A SQLAlchemy engine (PyMySQL) for the source; sessions run in UTC, utf8mb4.

    `local_infile` (LOAD DATA LOCAL INFILE) is off unless asked: only the demo builder needs
    it, and a production connection must not let the server read client files."""
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

    credentials = resolve_credentials(source)
    url = URL.create(
        "mysql+pymysql",
        username=credentials.user,
        password=str(credentials.password) or None,
        host=credentials.host,
        port=credentials.port,
        database=credentials.database,
        query={"charset": "utf8mb4"},
    )
    connect_args: dict[str, Any] = {
        "connect_timeout": source.connect_timeout,
        "read_timeout": source.read_timeout,
        "write_timeout": source.write_timeout,
        "init_command": "SET time_zone = '+00:00'",
    }
    if local_infile:
        connect_args["local_infile"] = True
    context = tls_context(source)
    if context is not None:
        connect_args["ssl"] = context
    engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True, **engine_options)
    engine._plex_etl_credentials = credentials  # type: ignore[attr-defined]
    return engine


@contextlib.contextmanager
def connect(source: Source, engine: Engine | None = None) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection whose connection errors name the source, not the password."""
    import sqlalchemy as sa

    engine = engine or create_engine(source)
    credentials: Credentials = engine._plex_etl_credentials  # type: ignore[attr-defined]
    try:
        connection = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise SourceConnectionError(
            f"cannot connect to {source.describe()}: {scrub(str(exc.orig), credentials)}{_hint(source, str(exc.orig))}"
        ) from None
    try:
        yield connection
    finally:
        connection.close()


def raw_connection(source: Source) -> Any:
    """A mysqlclient connection for the streaming extraction (UTC session, utf8mb4, C decoding)."""
    import MySQLdb

    credentials = resolve_credentials(source)
    options: dict[str, Any] = {
        "host": credentials.host,
        "port": credentials.port,
        "user": credentials.user,
        "password": str(credentials.password),
        "database": credentials.database,
        "charset": "utf8mb4",
        # Without read/write timeouts a silent network stall (a proxy that stops forwarding)
        # blocks the read forever: libmariadb waits on the socket with no deadline.
        "connect_timeout": source.connect_timeout,
        "read_timeout": source.read_timeout,
        "write_timeout": source.write_timeout,
        "init_command": "SET time_zone = '+00:00'",
    }
    if source.tls.enabled:
        _check_tls_files(source)
        tls: dict[str, Any] = {}
        if source.tls.ca_file:
            tls["ca"] = source.tls.ca_file
        options["ssl"] = tls
        options["ssl_mode"] = "VERIFY_IDENTITY" if source.tls.verify else "REQUIRED"
    try:
        return MySQLdb._mysql.connect(**options)
    except MySQLdb.MySQLError as exc:
        raise SourceConnectionError(
            f"cannot connect to {source.describe()}: {scrub(str(exc), credentials)}{_hint(source, str(exc))}"
        ) from None


# A statement -> its rows. Works on a SQLAlchemy connection and on a raw mysqlclient connection
# (the stream's, or `raw_connection`'s: a few milliseconds to open where PyMySQL takes ~100).
Run = Callable[[str], Sequence[tuple[Any, ...]]]


def runner(connection: Any) -> Run:
    """`Run` over a SQLAlchemy connection or a raw mysqlclient (`MySQLdb._mysql`) connection."""
    if hasattr(connection, "exec_driver_sql"):  # SQLAlchemy: its DB-API cursor, SQL passed as is

        def execute(sql: str) -> Sequence[tuple[Any, ...]]:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql)
                return [tuple(r) for r in cursor.fetchall()]
            finally:
                cursor.close()

        return execute

    def run(sql: str) -> Sequence[tuple[Any, ...]]:
        connection.query(sql)
        result = connection.store_result()
        return result.fetch_row(maxrows=0, how=0) if result is not None else ()

    return run


def text_literal(text: str) -> str:
    """A MySQL string literal of any text, whatever the server's escaping mode (hex digits)."""
    return f"CONVERT(X'{text.encode().hex()}' USING utf8mb4)" if text else "''"


def text_value(value: Any) -> str | None:
    """A text column's value as str (the raw mysqlclient connection returns bytes)."""
    return value.decode() if isinstance(value, bytes) else value
