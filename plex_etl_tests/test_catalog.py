"""Discovery against the real demo databases: structure, relationships, inference, drift."""

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from plex_etl.catalog.discover import discover, read_structure
from plex_etl.catalog.model import catalog_to_dict, load_catalog
from plex_etl.catalog.plan import load_plan, validate
from plex_etl.catalog.store import catalog_path, plan_path, run_discover
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import PACKAGE_CONFIG_DIR, with_database

PREFIX = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")  # parallel sessions differ
DRIFT = f"{PREFIX}_catalog_drift"


def reference_pairs(reference_dir: Path) -> set[tuple[str, str, str, str]]:
    data = yaml.safe_load((reference_dir / "mysql_relationships_discovered.yaml").read_text())
    pairs = set()
    for fk in data["foreign_keys"].values():
        columns = fk.get("columns") or [fk["column"]]
        referenced = fk.get("referenced_columns") or [fk["referenced_column"]]
        for c, r in zip(columns, referenced, strict=True):
            pairs.add((fk["table"], c, fk["referenced_table"], r))
    return pairs


def relationship_pairs(relationships) -> set[tuple[str, str, str, str]]:
    return {pair for r in relationships for pair in r.pairs}


@pytest.fixture(scope="module")
def plex_catalog(demo_sources):
    with connect(demo_sources["plex"]) as connection:
        return discover(connection, "plex", demo_sources["plex"].database)


def test_discovery_finds_exactly_the_86_declared_relationships(plex_catalog, reference_dir):
    declared = [r for r in plex_catalog.relationships if not r.inferred]
    assert len(declared) == 86
    assert relationship_pairs(declared) == reference_pairs(reference_dir)
    composite = [r for r in declared if len(r.columns) > 1]
    assert len(composite) == 4
    assert [r.name for r in declared if r.self_referencing] == ["categories_ibfk_2"]
    outside = {r.referenced_table for r in declared} - set(
        yaml.safe_load((reference_dir / "mysql_structure.yaml").read_text())["tables"]
    )
    assert len(outside) == 34  # lookup tables the old system did not replicate


def test_catalog_columns_keys_and_mapped_types(plex_catalog, reference_dir):
    structure = yaml.safe_load((reference_dir / "mysql_structure.yaml").read_text())["tables"]
    for name, table in structure.items():
        found = plex_catalog.table(name)
        assert [c.name for c in found.columns] == [c["name"] for c in table["columns"]], name
        assert found.primary_key == tuple(c["name"] for c in table["columns"] if c["column_key"] == "PRI")
        for column in found.columns:
            assert column.bigquery_type and column.local_type and column.arrow_type, (name, column.name)
            assert column.warehouse_name
    factlineas = plex_catalog.table("factlineas")
    assert factlineas.engine == "InnoDB" and factlineas.row_estimate > 0
    assert any(i.columns[:1] == ("IDComprobante",) for i in factlineas.indexes)


def test_committed_catalog_matches_the_demo_database(plex_catalog):
    committed = load_catalog(catalog_path("plex", PACKAGE_CONFIG_DIR))
    fresh, saved = catalog_to_dict(plex_catalog), catalog_to_dict(committed)
    for data in (fresh, saved):
        data["database"] = None
        data["server_version"] = None
        for table in data["tables"].values():
            table["row_estimate"] = table["data_bytes"] = None
        for rel in data["relationships"]:
            rel.pop("evidence", None)
    assert fresh == saved
    validate(load_plan(plan_path("plex", PACKAGE_CONFIG_DIR), "plex"), committed)


def _copy_without_foreign_keys(engine: sa.Engine, source_db: str, target_db: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{target_db}`"))
        connection.execute(sa.text(f"CREATE DATABASE `{target_db}`"))
        tables = connection.execute(
            sa.text("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :db"),
            {"db": source_db},
        ).scalars().all()
        for table in tables:
            # CREATE TABLE ... LIKE keeps columns and indexes but not foreign keys.
            connection.execute(sa.text(f"CREATE TABLE `{target_db}`.`{table}` LIKE `{source_db}`.`{table}`"))
            connection.execute(sa.text(f"INSERT INTO `{target_db}`.`{table}` SELECT * FROM `{source_db}`.`{table}`"))


def test_inference_recovers_dropped_foreign_keys(demo_sources, plex_catalog, reference_dir):
    source = with_database(demo_sources["plex"], f"{PREFIX}_catalog_nofk")
    engine = create_engine(demo_sources["plex"])
    _copy_without_foreign_keys(engine, demo_sources["plex"].database, source.database)
    try:
        with connect(source) as connection:
            catalog = discover(connection, "plex", source.database)
        assert not [r for r in catalog.relationships if not r.inferred]
        truth = reference_pairs(reference_dir)
        # Relationships inferred on the intact database too are real but undeclared
        # (factlineascostos -> factlineas, ...): not errors caused by dropping the constraints.
        known = truth | relationship_pairs(r for r in plex_catalog.relationships if r.inferred)
        found = relationship_pairs(catalog.relationships)
        recall = len(found & truth) / len(truth)
        precision = len(found & known) / len(found)
        strict = len(found & truth) / len(found)
        print(f"\ninference on plex without FK constraints: {len(found)} column pairs inferred, "
              f"recall {recall:.1%}, precision {precision:.1%} "
              f"(against the declared keys alone: {strict:.1%})")
        print("missed:", sorted(truth - found))
        print("not declared:", sorted(found - truth))
        for rel in catalog.relationships:
            assert rel.evidence is not None and rel.evidence.match_ratio >= 0.98
        assert recall >= 0.90
        assert precision >= 0.95
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{source.database}`"))


def test_schema_drift_is_reported_and_the_plan_is_kept(demo_sources, tmp_path):
    engine = create_engine(demo_sources["quantio"])
    source = with_database(demo_sources["quantio"], DRIFT)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {DRIFT}"))
        connection.execute(sa.text(f"CREATE DATABASE {DRIFT}"))
        connection.execute(sa.text(
            f"CREATE TABLE {DRIFT}.ventas (id INT PRIMARY KEY, fecha DATETIME NOT NULL, "
            "importe DECIMAL(12,2), sucursal INT, obsoleta VARCHAR(10))"
        ))
    try:
        first = run_discover(source, directory=tmp_path, log=lambda _m: None)
        assert first.proposals == ["ventas"]
        plan_file = tmp_path / "quantio.plan.yaml"
        proposed = load_plan(plan_file, "quantio").tables["ventas"]
        assert (proposed.strategy, proposed.date_columns, proposed.proposed) == ("event", ("fecha",), True)
        # The user edits the plan: their words must survive every later discovery.
        user_plan = plan_file.read_text().replace("proposed: true", "chunk_rows: 1234  # my choice")
        plan_file.write_text(user_plan)
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {DRIFT}.ventas ADD COLUMN canal VARCHAR(20)"))
            connection.execute(sa.text(f"ALTER TABLE {DRIFT}.ventas DROP COLUMN obsoleta"))
            connection.execute(sa.text(f"ALTER TABLE {DRIFT}.ventas MODIFY importe DECIMAL(18,4)"))
            connection.execute(sa.text(
                f"CREATE TABLE {DRIFT}.cajas (id INT PRIMARY KEY, abierta TINYINT(1), nivel TINYINT(1))"
            ))
            connection.execute(sa.text(f"INSERT INTO {DRIFT}.cajas VALUES (1, 1, 0), (2, 0, 5)"))
        second = run_discover(source, directory=tmp_path, log=lambda _m: None)
        assert "new column ventas.canal varchar(20)" in second.changes
        assert "dropped column ventas.obsoleta" in second.changes
        assert "retyped column ventas.importe: decimal(12,2) -> decimal(18,4)" in second.changes
        assert "new table cajas (3 columns)" in second.changes
        assert second.proposals == ["cajas"]
        # TINYINT(1) becomes BOOL only where the sampled data is really 0/1.
        assert load_plan(plan_file, "quantio").tables["cajas"].type_overrides == {"abierta": "bool"}
        assert plan_file.read_text().startswith(user_plan)
        assert load_plan(plan_file, "quantio").tables["ventas"].chunk_rows == 1234
        third = run_discover(source, directory=tmp_path, log=lambda _m: None)
        assert third.changes == [] and third.proposals == []
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {DRIFT}"))


def test_discovery_include_exclude(demo_sources):
    with connect(demo_sources["plex"]) as connection:
        catalog = read_structure(
            connection, "plex", demo_sources["plex"].database, include=["fact*"], exclude=["*costos"]
        )
    assert "factlineas" in catalog.tables and "factlineascostos" not in catalog.tables
    assert all(name.startswith("fact") for name in catalog.tables)


def test_cli_discover_writes_catalog_plan_and_docs(demo_sources, tmp_path, monkeypatch):
    from plex_etl.cli import main

    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(PACKAGE_CONFIG_DIR / "sources.yaml", config / "sources.yaml")
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(config))
    monkeypatch.setenv("QUANTIO_MYSQL_DATABASE", demo_sources["quantio"].database)
    assert main(["discover", "--source", "quantio", "--docs", str(tmp_path / "docs")]) == 0
    assert (config / "quantio.catalog.yaml").exists() and (config / "quantio.plan.yaml").exists()
    text = (tmp_path / "docs" / "quantio.md").read_text()
    assert text.startswith("# Source `quantio`") and "\n## productos\n" in text
