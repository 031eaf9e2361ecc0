"""One bad table or source never takes down the code location (issue 16): odd MySQL table
names give valid definitions, a table renamed in MySQL keeps only itself out (issue 24), and a
source Dagster refuses is skipped, not fatal. More in test_config_problems.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from plex_etl.catalog.naming import group_name, tag_value
from plex_etl.catalog.store import run_discover
from plex_etl.mysql import create_engine
from plex_etl.sources import get_source, load_sources, with_database
from plex_etl_tests.replication import accept_proposals

PREFIX = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")
ODD_DB = f"{PREFIX}_odd"
STALE_DB = f"{PREFIX}_stale"

ODD_TABLES = [
    "CREATE TABLE `facturación` (id INT PRIMARY KEY, fecha DATE NOT NULL, importe DECIMAL(10, 2))",
    "CREATE TABLE `ventas-2024` (id INT PRIMARY KEY, factura_id INT NOT NULL, fecha DATE, "
    "KEY (factura_id), FOREIGN KEY (factura_id) REFERENCES `facturación` (id))",
    "CREATE TABLE `it's` (id INT PRIMARY KEY, nombre VARCHAR(20))",
    "CREATE TABLE `Año Fiscal.2024` (id INT PRIMARY KEY)",
]


def test_group_names_and_tag_values_are_valid():
    assert group_name("odd", "facturación") == "odd_facturacion"
    assert group_name("odd", "ventas-2024") == "odd_ventas_2024"
    assert group_name("odd", "it's") == "odd_it_s"
    assert tag_value("ventas-2024") == "ventas-2024"
    assert tag_value("it's ñandú") == "it_s_nandu"
    assert len(tag_value("x" * 100)) == 63


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config directory with two sources: `odd` (odd table names) and `stale` (a plan entry
    for a table renamed in MySQL after discovery, and a table that references it)."""
    server = with_database(get_source("plex"), "mysql")
    engine = create_engine(server)
    with engine.begin() as connection:
        for database in (ODD_DB, STALE_DB):
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
            connection.execute(sa.text(f"CREATE DATABASE {database}"))
        for ddl in ODD_TABLES:
            connection.execute(sa.text(ddl.replace("CREATE TABLE ", f"CREATE TABLE {ODD_DB}.", 1)))
        connection.execute(sa.text(f"CREATE TABLE {STALE_DB}.clientes (id INT PRIMARY KEY)"))
        connection.execute(sa.text(
            f"CREATE TABLE {STALE_DB}.pedidos (id INT PRIMARY KEY, cliente INT NOT NULL, fecha DATE NOT NULL, "
            f"KEY (cliente), FOREIGN KEY (cliente) REFERENCES {STALE_DB}.clientes (id))"))
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        f"  odd: {{host: 127.0.0.1, database: {ODD_DB}, user: root}}\n"
        f"  stale: {{host: 127.0.0.1, database: {STALE_DB}, user: root}}\n"
    )
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(tmp_path))
    try:
        sources = load_sources()
        for source in sources.values():
            run_discover(source, directory=tmp_path, log=lambda _msg: None)
        with engine.begin() as connection:
            connection.execute(sa.text(f"RENAME TABLE {STALE_DB}.clientes TO {STALE_DB}.clientes_2"))
        run_discover(sources["stale"], directory=tmp_path, log=lambda _msg: None)
        accept_proposals(tmp_path)
        yield tmp_path
    finally:
        with engine.begin() as connection:
            for database in (ODD_DB, STALE_DB):
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {database}"))
        engine.dispose()


def test_a_renamed_table_is_isolated_and_odd_names_load(config_dir: Path, caplog: pytest.LogCaptureFixture):
    """After `discover`, the plan still names `clientes`, now `clientes_2` in MySQL: only
    stale/clientes is out, as a stand-in naming file and table; pedidos (which references it),
    clientes_2 (its proposal accepted) and the other source load."""
    from plex_etl.defs.problems import CONFIGURATION_CHECK, ERRORS_GROUP

    caplog.set_level(logging.ERROR, logger="plex_etl.definitions")
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"odd/facturacion", "odd/ventas_2024", "odd/it_s", "stale/pedidos", "stale/clientes",
            "stale/clientes_2"} <= keys
    groups = {key.path[1]: graph.get(key).group_name for key in graph.get_all_asset_keys() if key.path[0] == "odd"}
    assert groups["facturacion"] == "odd_facturacion" and groups["ventas_2024"] == "odd_ventas_2024"
    stand_in = graph.get(dg.AssetKey(["stale", "clientes"]))
    assert stand_in.group_name == ERRORS_GROUP
    assert graph.get(dg.AssetKey(["stale", "pedidos"])).parent_keys == {dg.AssetKey(["stale", "clientes_2"])}
    for text in (stand_in.description, stand_in.metadata["plex_etl/problem"].value):
        assert "stale.plan.yaml" in text and "table clientes: not in the catalog" in text
    assert dg.AssetCheckKey(stand_in.key, CONFIGURATION_CHECK) in graph.asset_check_keys
    assert "plex_etl/skipped_sources" not in (defs.metadata or {})
    assert "table stale.clientes does not load" in caplog.text and "stale.plan.yaml" in caplog.text


def build_definitions() -> dg.Definitions:
    from plex_etl.definitions import build_definitions

    return build_definitions()


def test_a_source_dagster_refuses_is_skipped(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """The whole code location is validated once; when that fails, each source is validated
    alone and the invalid one (here an asset needing a resource nobody provides) is left out
    like a source whose plan is broken, while the others load."""
    from plex_etl import definitions

    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.delenv("PLEX_ETL_CONFIG_DIR", raising=False)
    build = definitions._source_definitions

    def quantio_invalid(source, warehouse_kind):
        part = build(source, warehouse_kind)
        if source.name == "quantio":
            @dg.asset(key=["quantio", "needs_a_missing_resource"], required_resource_keys={"missing_resource"})
            def needs_a_missing_resource() -> None: ...

            part.assets.append(needs_a_missing_resource)
        return part

    monkeypatch.setattr(definitions, "_source_definitions", quantio_invalid)
    caplog.set_level(logging.ERROR, logger="plex_etl.definitions")
    defs = definitions.build_definitions()
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "plex/factcabecera" in keys and [k for k in keys if k.startswith("quantio/")] == ["quantio/configuration"]
    skipped = defs.metadata["plex_etl/skipped_sources"].value
    assert list(skipped) == ["quantio"] and "missing_resource" in skipped["quantio"]
    assert "source 'quantio' skipped" in caplog.text
    stand_in = defs.resolve_asset_graph().get(dg.AssetKey(["quantio", "configuration"]))
    assert "missing_resource" in stand_in.description and "source quantio is not loaded" in stand_in.description
