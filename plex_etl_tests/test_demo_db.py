"""The demo database builder against the real MariaDB: schema, keys, counts, data, mess.

The shared build (`demo_sources`, scale 0.001) is checked against the production reference
in plex_etl_tests/data/plex-reference (a copy of shared/plex-reference); extra builds use
databases named plexetl_t_demo_* and are dropped at the end.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from plex_etl.demo.builder import DEMO_SOURCES, MARKER_TABLE, NotADemoDatabaseError, build_demo
from plex_etl.demo.schema import MASTER_DATA_ROWS, expected_rows, load_schema
from plex_etl.mysql import create_engine
from plex_etl.sources import Source, with_database
from plex_etl_tests import conftest
from plex_etl_tests.conftest import TEST_DAYS, TEST_SCALE

TINY_SCALE = 0.0002
BIG_PLEX_TABLES = ("factcabecera", "factlineas", "asientos_detalle", "factpagos")


def query(source: Source, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(source)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def scalar(source: Source, sql: str, **params: Any) -> Any:
    return query(source, sql, **params)[0][0]


def normalise_type(column_type: str) -> str:
    """Integer display widths dropped (MySQL 8 omits them), tinyint(1) kept (a boolean)."""
    column_type = column_type.lower()
    if column_type.startswith("tinyint(1)"):
        return column_type
    return re.sub(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", column_type)


@pytest.fixture(scope="module")
def plex(demo_sources: dict[str, Source]) -> Source:
    return demo_sources["plex"]


@pytest.fixture(scope="module")
def quantio(demo_sources: dict[str, Source]) -> Source:
    return demo_sources["quantio"]


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, Any]:
    return {
        "structure": yaml.safe_load((reference_dir / "mysql_structure.yaml").read_text())["tables"],
        "fks": yaml.safe_load(
            (reference_dir / "mysql_relationships_discovered.yaml").read_text())["foreign_keys"],
    }


@pytest.fixture(scope="module")
def extra_databases() -> Iterator[list[Source]]:
    """Databases built by single tests; dropped at the end."""
    created: list[Source] = []
    yield created
    for source in created:
        query(source, f"DROP DATABASE IF EXISTS `{source.database}`")


def build_extra(extra: list[Source], name: str, database: str, **options: Any) -> dict[str, int]:
    source = conftest.test_source(name, database)
    extra.append(source)
    options.setdefault("log", lambda _msg: None)
    return build_demo(source, **options)


# -- schema -----------------------------------------------------------------------------


def test_plex_has_the_reference_tables_columns_types_and_keys(
    plex: Source, reference: dict[str, Any]
) -> None:
    rows = query(
        plex,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
        db=plex.database,
    )
    actual: dict[str, list[tuple[str, str, bool]]] = {}
    primary: dict[str, list[str]] = {}
    for table, column, column_type, nullable, key in rows:
        actual.setdefault(table, []).append((column, normalise_type(column_type), nullable == "YES"))
        if key == "PRI":
            primary.setdefault(table, []).append(column)
    for table, spec in reference["structure"].items():
        columns = sorted(spec["columns"], key=lambda c: c["ordinal_position"])
        expected = [(c["name"], normalise_type(c["mysql_column_type"]), bool(c["is_nullable"]))
                    for c in columns]
        assert actual.get(table) == expected, table
        assert primary[table] == [c["name"] for c in columns if c.get("column_key") == "PRI"]
    lookups = set(actual) - set(reference["structure"]) - {MARKER_TABLE}
    assert len(lookups) == 34
    assert {"tarjetas", "provincias", "formas"} <= lookups


def test_plex_keeps_latin1_with_a_few_utf8mb4_tables(plex: Source) -> None:
    charsets = dict(query(
        plex,
        "SELECT t.TABLE_NAME, c.CHARACTER_SET_NAME FROM information_schema.TABLES t "
        "JOIN information_schema.COLLATION_CHARACTER_SET_APPLICABILITY c "
        "ON c.COLLATION_NAME = t.TABLE_COLLATION WHERE t.TABLE_SCHEMA = :db",
        db=plex.database,
    ))
    assert charsets["clientes"] == "latin1"
    assert charsets["asientos"] == "utf8mb4"
    assert sum(1 for c in charsets.values() if c == "latin1") > 60


def _declared_foreign_keys(source: Source) -> set[tuple[str, str, str, str]]:
    return set(query(
        source,
        "SELECT TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
        "FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL",
        db=source.database,
    ))


def test_plex_declares_the_86_reference_foreign_keys(
    plex: Source, reference: dict[str, Any]
) -> None:
    constraints = query(
        plex,
        "SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = :db",
        db=plex.database,
    )
    assert len(constraints) == 86
    assert {name for (name,) in constraints} == set(reference["fks"])
    expected = set()
    for fk in reference["fks"].values():
        columns = fk.get("columns") or [fk["column"]]
        referenced = fk.get("referenced_columns") or [fk["referenced_column"]]
        expected |= {(fk["table"], c, fk["referenced_table"], r)
                     for c, r in zip(columns, referenced, strict=True)}
    assert _declared_foreign_keys(plex) == expected


def test_quantio_has_its_keys_and_a_variety_of_types(quantio: Source) -> None:
    foreign_keys = query(
        quantio,
        "SELECT CONSTRAINT_NAME, COUNT(*) FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL "
        "GROUP BY CONSTRAINT_NAME",
        db=quantio.database,
    )
    assert len(foreign_keys) == 10
    assert any(columns == 2 for _, columns in foreign_keys)  # a composite one
    tables = {name for (name,) in query(
        quantio, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :db",
        db=quantio.database)}
    assert tables - {MARKER_TABLE} == {
        "productos", "stock", "stocklotes", "plex_pedidos", "plex_pedidoslineas", "reporte_bi",
        "medicamentos", "sucursales", "plex_proveedores",
    }
    columns = query(
        quantio,
        "SELECT COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db",
        db=quantio.database,
    )
    types = {column_type.lower() for column_type, _ in columns}
    for wanted in (r"decimal\(38,10\)", r"bigint\(20\) unsigned", r"tinyint\(1\)",
                   r"datetime\(6\)", r"timestamp", r"^time$", r"year", r"^enum\(", r"^set\(",
                   r"^bit\(1\)$", r"varbinary", r"^blob$", r"^date$"):
        assert any(re.search(wanted, t) for t in types), wanted
    # MariaDB stores JSON as LONGTEXT with a json_valid check.
    assert "longtext" in types
    assert any("VIRTUAL" in extra.upper() for _, extra in columns)
    assert scalar(quantio, "SELECT COUNT(*) FROM productos WHERE HashExterno = 18446744073709551615")
    assert scalar(quantio, "SELECT COUNT(*) FROM productos WHERE EsGenerico NOT IN (0, 1)") == 0
    assert scalar(quantio, "SELECT COUNT(*) FROM productos "
                           "WHERE PrecioConIva <> ROUND(PrecioLista * 1.21, 2)") == 0


# -- rows -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEMO_SOURCES)
def test_row_counts_follow_expected_rows(demo_sources: dict[str, Source], name: str) -> None:
    source = demo_sources[name]
    schema = load_schema(name)
    for table in schema.tables:
        expected = expected_rows(name, table, TEST_SCALE)
        count = scalar(source, f"SELECT COUNT(*) FROM `{table}`")
        assert abs(count - expected) <= max(1, expected * 0.01), table


def test_expected_rows_is_production_times_scale_with_a_master_data_floor() -> None:
    schema = load_schema("plex")
    for name, table in schema.tables.items():
        rows = expected_rows("plex", name, 0.01)
        if table.rows >= MASTER_DATA_ROWS:
            assert abs(rows - table.rows * 0.01) <= max(1, table.rows * 0.0001), name
        else:
            assert rows == table.rows, name
    assert expected_rows("plex", "sucursales", 0.0001) == 22
    assert expected_rows("plex", "rubros", 0.5) == 4
    assert expected_rows("plex", "empresas", 0.001) == 5
    assert expected_rows("plex", "factcabecera", 1) == 9234545
    assert expected_rows("plex", "pedidos", 1e-9) == 1
    assert expected_rows("quantio", "stocklotes", 1) == 156751
    assert expected_rows("quantio", "productos", 0.1) == 9151
    with pytest.raises(ValueError, match="nope"):
        expected_rows("nope", "x", 1)


@pytest.mark.parametrize("name", DEMO_SOURCES)
def test_every_foreign_key_is_satisfied(demo_sources: dict[str, Source], name: str) -> None:
    source = demo_sources[name]
    rows = query(
        source,
        "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, "
        "GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION), "
        "GROUP_CONCAT(REFERENCED_COLUMN_NAME ORDER BY ORDINAL_POSITION) "
        "FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL "
        "GROUP BY CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME",
        db=source.database,
    )
    assert rows
    violations = {}
    for constraint, table, parent, columns, referenced in rows:
        pairs = list(zip(columns.split(","), referenced.split(","), strict=True))
        on = " AND ".join(f"p.`{r}` = c.`{c}`" for c, r in pairs)
        present = " AND ".join(f"c.`{c}` IS NOT NULL" for c, _ in pairs)
        missing = scalar(
            source,
            f"SELECT COUNT(*) FROM `{table}` c LEFT JOIN `{parent}` p ON {on} "
            f"WHERE {present} AND p.`{pairs[0][1]}` IS NULL",
        )
        if missing:
            violations[constraint] = missing
    assert violations == {}


def test_nullable_foreign_keys_are_sometimes_null(plex: Source) -> None:
    assert scalar(plex, "SELECT COUNT(*) FROM factcabecera WHERE IDCliente IS NULL") > 0
    assert scalar(plex, "SELECT COUNT(*) FROM categories WHERE IdParentCategory IS NULL") > 0
    assert scalar(plex, "SELECT COUNT(*) FROM categories WHERE IdParentCategory IS NOT NULL") > 0


def test_invoice_totals_are_the_sum_of_their_lines(plex: Source) -> None:
    mismatched = scalar(
        plex,
        "SELECT COUNT(*) FROM factcabecera c JOIN (SELECT IDComprobante, SUM(Total) AS total "
        "FROM factlineas GROUP BY IDComprobante) l ON l.IDComprobante = c.IDComprobante "
        "WHERE ABS(c.TotalComprobante - l.total) > 0.01",
    )
    assert mismatched == 0
    assert scalar(plex, "SELECT COUNT(DISTINCT IDComprobante) FROM factlineas") > 1000


def test_event_dates_cover_every_day_of_the_period(
    plex: Source, demo_end_date: dt.date
) -> None:
    first = demo_end_date - dt.timedelta(days=TEST_DAYS - 1)
    days = query(plex, "SELECT DISTINCT Emision FROM factcabecera ORDER BY 1")
    assert [d for (d,) in days] == [first + dt.timedelta(days=i) for i in range(TEST_DAYS)]
    schema = load_schema("plex")
    for table in schema.tables.values():
        for column in table.event_dates:
            low, high, nulls = query(
                plex, f"SELECT MIN(`{column}`), MAX(`{column}`), SUM(`{column}` IS NULL) "
                      f"FROM `{table.name}`")[0]
            low = low.date() if isinstance(low, dt.datetime) else low
            high = high.date() if isinstance(high, dt.datetime) else high
            assert first <= low <= high <= demo_end_date, (table.name, column)
            assert not nulls, (table.name, column)


def test_the_data_carries_real_world_mess(plex: Source) -> None:
    zero_dates = scalar(
        plex, "SELECT COUNT(*) FROM stocklotes WHERE FechaVencimiento = '0000-00-00 00:00:00'")
    zero_dates += scalar(plex, "SELECT COUNT(*) FROM clientes WHERE FechaBaja = '0000-00-00'")
    assert zero_dates > 0
    assert scalar(plex, "SELECT COUNT(*) FROM factcabecera WHERE Hora > '24:00:00'") > 0
    assert scalar(plex, "SELECT COUNT(*) FROM factcabecera WHERE Hora < '00:00:00'") > 0
    assert scalar(plex, "SELECT COUNT(*) FROM factcabecera WHERE IdCuotaSocial = 2147483647")
    assert scalar(plex, "SELECT COUNT(*) FROM factcabecera WHERE Autopropagado = 127")
    names = {n for (n,) in query(plex, "SELECT Nombre FROM clientes WHERE Nombre LIKE '%ñ%'")}
    assert any("Núñez" in n or "Peña" in n or "Muñoz" in n or "Ibáñez" in n for n in names)
    assert scalar(plex, "SELECT Descripcion FROM provincias WHERE idProvincia = 'X'") == "Córdoba"
    notes = {n for (n,) in query(plex, "SELECT DISTINCT Observa FROM clientes")}
    assert "Ruta de archivo C:\\Plex\\recetas\\" in notes
    assert any(n and "\n" in n for n in notes)
    assert scalar(plex, "SELECT COUNT(*) FROM clientes WHERE Email IS NULL") > 0


# -- builds -----------------------------------------------------------------------------


def _checksums(source: Source) -> dict[str, int]:
    tables = ", ".join(f"`{t}`" for t in load_schema(source.name).tables)
    return {name.split(".")[-1]: value
            for name, value in query(source, f"CHECKSUM TABLE {tables}")}


def test_builds_are_deterministic(extra_databases: list[Source]) -> None:
    end = dt.date(2026, 3, 15)
    options = {"scale": TINY_SCALE, "days": 20, "end_date": end, "force": True}
    first = build_extra(extra_databases, "plex", "plexetl_t_demo_a", seed=11, **options)
    build_extra(extra_databases, "plex", "plexetl_t_demo_b", seed=11, **options)
    build_extra(extra_databases, "plex", "plexetl_t_demo_c", seed=12, **options)
    a, b, c = (_checksums(source) for source in extra_databases[-3:])
    assert set(a) == set(first)
    assert a == b
    for table in BIG_PLEX_TABLES:
        assert a[table] != c[table], table


def test_refuses_to_drop_a_database_it_did_not_build(extra_databases: list[Source]) -> None:
    source = conftest.test_source("quantio", "plexetl_t_demo_foreign")
    extra_databases.append(source)
    query(with_database(source, "information_schema"),
          "CREATE DATABASE IF NOT EXISTS plexetl_t_demo_foreign")
    query(source, "CREATE TABLE IF NOT EXISTS precious (id INT)")
    with pytest.raises(NotADemoDatabaseError, match=r"plexetl_t_demo_foreign.*--force"):
        build_demo(source, scale=TINY_SCALE, log=lambda _msg: None)
    assert scalar(source, "SELECT COUNT(*) FROM information_schema.TABLES "
                          "WHERE TABLE_SCHEMA = 'plexetl_t_demo_foreign'") == 1
    counts = build_demo(source, scale=TINY_SCALE, force=True, log=lambda _msg: None)
    assert counts["sucursales"] == 22
    # Now it carries the marker: rebuilding needs no force.
    build_demo(source, scale=TINY_SCALE, log=lambda _msg: None)
    marker = query(source, f"SELECT schema_name, seed, days FROM `{MARKER_TABLE}`")
    assert marker == [("quantio", 42, 60)]


def test_unknown_schema_and_summary_log(extra_databases: list[Source]) -> None:
    source = conftest.test_source("plex", "plexetl_t_demo_unknown")
    with pytest.raises(ValueError, match="'other'"):
        build_demo(replace(source, name="other"), scale=0.001)
    messages: list[str] = []
    counts = build_extra(extra_databases, "quantio", "plexetl_t_demo_log", scale=TINY_SCALE,
                         force=True, log=messages.append)
    summary = "\n".join(messages)
    assert "rows/s" in summary and "stocklotes" in summary
    assert f"{sum(counts.values()):,}" in summary
