"""Scratch PostgreSQL databases for the tests of the production instance (Dagster's own
storage, dagster-postgres). Not a test module.

PostgreSQL must answer at 127.0.0.1:5432 (user postgres, trust auth; .ci/run starts it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextlib.contextmanager
def scratch_postgres(suffix: str) -> Iterator[str]:
    """A new PostgreSQL database `<prefix>_<suffix>` on the local server, dropped afterwards."""
    import psycopg2

    name = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_{suffix}"
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:
        pytest.fail(
            f"PostgreSQL does not answer on {PG['host']}:{PG['port']} as {PG['user']} ({error}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (.ci/run does)"
        )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def instance_environment(database: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for `database` on the local server."""
    return {"DAGSTER_PG_HOST": PG["host"], "DAGSTER_PG_PORT": str(PG["port"]), "DAGSTER_PG_DB": database,
            "DAGSTER_PG_USERNAME": PG["user"], "DAGSTER_PG_PASSWORD": ""}
