"""MySQL connections: LOAD DATA LOCAL INFILE is enabled only where asked (the demo builder)."""

from pymysql.constants import CLIENT

from plex_etl.mysql import create_engine


def client_flag(engine) -> int:
    with engine.connect() as connection:
        return connection.connection.dbapi_connection.client_flag


def test_local_infile_is_off_unless_the_demo_builder_asks(demo_sources):
    source = demo_sources["plex"]
    assert not client_flag(create_engine(source)) & CLIENT.LOCAL_FILES
    assert client_flag(create_engine(source, local_infile=True)) & CLIENT.LOCAL_FILES
