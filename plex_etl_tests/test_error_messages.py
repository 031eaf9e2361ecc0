"""Clear errors (issue 16): each names the file, source, variable, table or column at fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from plex_etl.catalog.plan import PlanError, validate
from plex_etl.catalog.store import load_source_catalog
from plex_etl.cli import main
from plex_etl.mysql import SourceConnectionError, create_engine, raw_connection
from plex_etl.sources import PasswordRef, SourceConfigError, Tls, get_source, load_sources, with_database


def test_a_missing_tls_ca_file_names_the_file_and_the_source(tmp_path: Path):
    missing = tmp_path / "certs" / "server-ca.pem"
    source = dataclasses.replace(get_source("plex"), tls=Tls(enabled=True, ca_file=str(missing)))
    for connect in (create_engine, raw_connection):
        with pytest.raises(SourceConfigError) as error:
            connect(source)
        assert str(missing) in str(error.value) and "source 'plex'" in str(error.value)


def test_a_broken_sources_file_is_named(tmp_path: Path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  erp:\n    host: [127.0.0.1\n")
    with pytest.raises(SourceConfigError, match=f"^{path}, line 4, column 1: not valid YAML: while parsing a flow "
                                                "sequence started at line 3"):
        load_sources(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(SourceConfigError, match=f"^{path}: expected a 'sources:' mapping"):
        load_sources(path)
    path.write_text("sources:\n  erp:\n    tls: yes\n")
    with pytest.raises(SourceConfigError, match=r"source 'erp'\.tls: expected a mapping"):
        load_sources(path)


def test_a_refused_login_names_the_unset_password_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PLEXETL_HROB_UNSET_PASSWORD", raising=False)
    source = dataclasses.replace(
        with_database(get_source("plex"), "mysql"), user="plexetl_hrob_nobody",
        password=PasswordRef(env="PLEXETL_HROB_UNSET_PASSWORD"),
    )
    with pytest.raises(SourceConnectionError) as error:
        raw_connection(source)
    message = str(error.value)
    assert "Access denied" in message
    assert "environment variable PLEXETL_HROB_UNSET_PASSWORD, which is not set" in message
    monkeypatch.setenv("PLEXETL_HROB_UNSET_PASSWORD", "wrong")
    with pytest.raises(SourceConnectionError) as error:
        raw_connection(source)
    assert "not set" not in str(error.value)


def test_a_type_override_the_column_cannot_take_fails_validation_naming_table_and_column():
    catalog, plan = load_source_catalog("plex")
    table, column = next(
        (t.name, c.name) for t in catalog.tables.values() for c in t.columns
        if c.data_type == "date" and t.name in plan.tables and plan.tables[t.name].include
    )
    broken = dataclasses.replace(plan, tables={
        **plan.tables, table: dataclasses.replace(plan.tables[table], type_overrides={column: "bool"}),
    })
    with pytest.raises(PlanError) as error:
        validate(broken, catalog)
    message = str(error.value)
    assert f"table {table}: type_overrides:" in message and column in message and "'bool'" in message


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PLEX_ETL_DEBUG", raising=False)
    assert main(["discover", "--source", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "plex-etl discover: error: unknown source 'nope'; configured: plex, quantio"
    ]
    with pytest.raises(SourceConfigError):
        main(["--debug", "discover", "--source", "nope"])
    monkeypatch.setenv("PLEX_ETL_DEBUG", "1")
    with pytest.raises(SourceConfigError):
        main(["discover", "--source", "nope"])
