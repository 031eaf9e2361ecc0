"""Sources are configuration; passwords never show up in messages, reprs or logs."""

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from plex_etl import sources as sources_module
from plex_etl.mysql import SourceConnectionError, connect, raw_connection
from plex_etl.sources import Source, SourceConfigError, get_source, load_sources, resolve_credentials

PASSWORD = "S3cr3t-Pl3x-pa55"


def write_sources(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(body)
    return path


def test_shipped_sources_file_names_both_sources():
    sources = load_sources()
    assert list(sources) == ["plex", "quantio"]
    assert sources["plex"].time_zone == "America/Argentina/Buenos_Aires"
    assert sources["plex"].password.env == "PLEX_MYSQL_PASSWORD"


def test_environment_references_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_HOST", "db.internal")
    path = write_sources(
        tmp_path,
        "sources:\n  erp:\n    host: ${MY_HOST}\n    port: ${MY_PORT:-3307}\n    database: erp\n"
        "    user: etl\n    password: {env: ERP_PASSWORD}\n    tls: {enabled: true, ca_file: /ca.pem}\n",
    )
    source = get_source("erp", path)
    assert (source.host, source.port, source.user, source.database) == ("db.internal", 3307, "etl", "erp")
    assert source.tls.enabled and source.tls.ca_file == "/ca.pem" and source.tls.verify


def test_password_written_in_the_file_is_refused(tmp_path):
    path = write_sources(tmp_path, f"sources:\n  erp:\n    password: {PASSWORD}\n")
    with pytest.raises(SourceConfigError) as error:
        load_sources(path)
    assert "never in the file" in str(error.value)
    assert PASSWORD not in str(error.value)


def test_missing_environment_variable_is_named(tmp_path):
    path = write_sources(tmp_path, "sources:\n  erp:\n    host: ${NOT_SET_ANYWHERE_X}\n")
    with pytest.raises(SourceConfigError, match="NOT_SET_ANYWHERE_X"):
        load_sources(path)


def test_unknown_source_lists_the_configured_ones():
    with pytest.raises(SourceConfigError, match="plex, quantio"):
        get_source("nope")


def test_secret_manager_json_payload(monkeypatch):
    payload = json.dumps({"host": "10.0.0.5", "user": "etl_reader", "password": PASSWORD})
    monkeypatch.setattr(sources_module, "_read_secret", lambda name: payload)
    source = sources_module.Source(
        name="plex", host="ignored", port=3306, database="plex", user="ignored",
        password=sources_module.PasswordRef(secret="projects/p/secrets/plex/versions/latest"),
    )
    credentials = resolve_credentials(source)
    assert (credentials.host, credentials.user, str(credentials.password)) == (
        "10.0.0.5", "etl_reader", PASSWORD,
    )
    assert PASSWORD not in repr(credentials)
    assert PASSWORD not in repr(credentials.password)


def test_wrong_password_gives_a_clear_error_without_the_password(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PLEX_MYSQL_PASSWORD", PASSWORD)
    source = get_source("plex")
    with pytest.raises(SourceConnectionError) as error, connect(source) as connection:
        connection.execute(sa.text("SELECT 1"))
    message = str(error.value)
    assert "source 'plex'" in message and "Access denied" in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(source)
    assert PASSWORD not in caplog.text
    with pytest.raises(SourceConnectionError) as raw_error:
        raw_connection(source)
    assert "Access denied" in str(raw_error.value) and PASSWORD not in str(raw_error.value)
    assert error.value.__cause__ is None  # the driver exception (and its args) is not chained


def test_mysql_resource_connects_from_the_sources_file(
    demo_sources: dict[str, Source], monkeypatch: pytest.MonkeyPatch
):
    import sqlalchemy as sa

    from plex_etl.defs.resources import MySQLResource

    # The committed sources file, pointed at the test database (the demo `plex` may not exist).
    monkeypatch.setenv("PLEX_MYSQL_DATABASE", demo_sources["plex"].database)
    resource = MySQLResource()
    with resource.connect("plex") as connection:
        assert connection.execute(sa.text("SELECT @@session.time_zone")).scalar() == "+00:00"
    assert resource.engine("quantio").url.database == "quantio"
    assert "********" in repr(resource.engine("plex").url) or resource.engine("plex").url.password is None
