"""MySQL connections: LOAD DATA LOCAL INFILE is enabled only where asked (the demo builder);
TLS, when configured, is required by every connection."""

import dataclasses

import pymysql
import pytest
import sqlalchemy as sa
from pymysql.constants import CLIENT

from plex_etl.cdc.reader import connection_settings
from plex_etl.mysql import create_engine
from plex_etl.sources import Tls


def client_flag(engine) -> int:
    with engine.connect() as connection:
        return connection.connection.dbapi_connection.client_flag


def test_local_infile_is_off_unless_the_demo_builder_asks(demo_sources):
    source = demo_sources["plex"]
    assert not client_flag(create_engine(source)) & CLIENT.LOCAL_FILES
    assert client_flag(create_engine(source, local_infile=True)) & CLIENT.LOCAL_FILES


def test_tls_from_sources_yaml_is_required_by_polling_and_change_capture(demo_sources):
    """This machine's MariaDB serves no TLS: with `tls.enabled` both connection paths must refuse
    to talk to it in clear, and connect without it as configured."""
    plain = demo_sources["plex"]
    tls = dataclasses.replace(plain, tls=Tls(enabled=True, verify=False))
    pymysql.connect(**connection_settings(plain)).close()
    with pytest.raises(pymysql.OperationalError, match="SSL"):
        pymysql.connect(**connection_settings(tls))
    with pytest.raises(sa.exc.OperationalError, match="SSL"):
        create_engine(tls).connect()
