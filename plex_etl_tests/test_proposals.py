"""Discovery proposes plans from the data: modification stamps, empty, birth and future dates,
first_day from the oldest date, unreviewed proposals that do not load, `id` keys that are not
relationships. One small database of our own on the real MariaDB."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace

import pytest
import sqlalchemy as sa

from plex_etl.catalog.model import Column, load_catalog
from plex_etl.catalog.plan import PlanError, accept_proposals, is_modification_stamp, load_plan
from plex_etl.catalog.profile import profile_dates
from plex_etl.catalog.store import catalog_path, load_source_catalog, plan_path, run_discover
from plex_etl.defs.assets import build_source_assets
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import PACKAGE_CONFIG_DIR, get_source, with_database

TODAY = dt.date.today()


def _days_ago(n: int) -> str:
    return str(TODAY - dt.timedelta(days=n))


def _values(rows: list[tuple]) -> str:
    return ", ".join("(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")" for row in rows)


STATEMENTS = [
    # ON UPDATE CURRENT_TIMESTAMP: a modification stamp whatever its name; FechaAlta the creation.
    "CREATE TABLE clientes (IdCliente INT NOT NULL PRIMARY KEY, Nombre VARCHAR(40), FechaAlta DATETIME NOT NULL, "
    "last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP)",
    "INSERT INTO clientes (IdCliente, Nombre, FechaAlta) VALUES "
    + _values([(i, f"c{i}", _days_ago(i)) for i in range(1, 21)]),
    # updated_at by name; Fecha is the event date, so it is the creation column of the upsert.
    "CREATE TABLE pedidos (IdPedido INT NOT NULL PRIMARY KEY, IdCliente INT NOT NULL, Fecha DATE NOT NULL, "
    "updated_at DATETIME NULL, KEY (IdCliente))",
    "INSERT INTO pedidos VALUES " + _values([(i, 1 + i % 20, _days_ago(i % 30), None) for i in range(1, 41)]),
    "CREATE TABLE pedidoslineas (IdPedido INT NOT NULL, Linea INT NOT NULL, Cantidad INT, "
    "PRIMARY KEY (IdPedido, Linea), CONSTRAINT fk_lineas_pedido FOREIGN KEY (IdPedido) REFERENCES pedidos (IdPedido))",
    "INSERT INTO pedidoslineas VALUES " + _values([(i, 1, i) for i in range(1, 41)]),
    # A stamp and no primary key: nothing to merge on.
    "CREATE TABLE auditoria (Tabla VARCHAR(40), FechaModificacion DATETIME NOT NULL)",
    "INSERT INTO auditoria VALUES " + _values([("t", _days_ago(i)) for i in range(5)]),
    # Fecha is NULL in every row: FechaCarga is the day.
    "CREATE TABLE movimientos (IdMovimiento INT NOT NULL PRIMARY KEY, Fecha DATE NULL, FechaCarga DATETIME NOT NULL)",
    "INSERT INTO movimientos VALUES " + _values([(i, None, _days_ago(i)) for i in range(1, 11)]),
    # A birth date by name only.
    "CREATE TABLE pacientes (IdPaciente INT NOT NULL PRIMARY KEY, FechaNacimiento DATE NOT NULL)",
    "INSERT INTO pacientes VALUES " + _values([(i, f"{1940 + i}-05-0{1 + i % 9}") for i in range(1, 11)]),
    # A birth date by its data: decades before the table's other date.
    "CREATE TABLE socios (IdSocio INT NOT NULL PRIMARY KEY, Fecha DATE NOT NULL, FechaIngreso DATETIME NOT NULL)",
    "INSERT INTO socios VALUES " + _values([(i, f"{1940 + 4 * i}-01-15", _days_ago(i)) for i in range(1, 11)]),
    # Dates in the future: appointments, not creations.
    "CREATE TABLE turnos (IdTurno INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL)",
    "INSERT INTO turnos VALUES " + _values([(i, str(TODAY + dt.timedelta(days=10 * i))) for i in range(1, 11)]),
    # Only old dates: first_day comes from them.
    "CREATE TABLE historico (IdHistorico INT NOT NULL PRIMARY KEY, Fecha DATE NOT NULL, Baja DATE, KEY (Fecha))",
    "INSERT INTO historico VALUES " + _values([(i, f"{1985 + i}-03-01", None) for i in range(22)]),
    "CREATE TABLE paises (Codigo CHAR(2) NOT NULL PRIMARY KEY, Nombre VARCHAR(40))",
    "INSERT INTO paises VALUES ('AR', 'Argentina'), ('UY', 'Uruguay')",
    # Two tables numbered 1..5 under the same generic key name: not related.
    "CREATE TABLE marcas (id INT NOT NULL PRIMARY KEY, Nombre VARCHAR(40))",
    "CREATE TABLE rubros (id INT NOT NULL PRIMARY KEY, Nombre VARCHAR(40))",
    "INSERT INTO marcas VALUES " + _values([(i, f"m{i}") for i in range(1, 6)]),
    "INSERT INTO rubros VALUES " + _values([(i, f"r{i}") for i in range(1, 6)]),
]


@pytest.fixture(scope="module")
def source():
    server = get_source("plex")
    database = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_proposals"
    engine = create_engine(with_database(server, "information_schema"))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
        connection.execute(sa.text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
        connection.execute(sa.text(f"USE `{database}`"))
        for statement in STATEMENTS:
            connection.execute(sa.text(statement))
    yield with_database(server, database)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
    engine.dispose()


def test_proposals_follow_the_data(source, tmp_path):
    lines: list[str] = []
    report = run_discover(source, directory=tmp_path, log=lines.append)
    plan = load_plan(plan_path("plex", tmp_path), "plex")
    p = plan.tables

    assert (p["clientes"].strategy, p["clientes"].modified_column, p["clientes"].created_column) == (
        "upsert", "last_update", "FechaAlta")
    assert (p["pedidos"].strategy, p["pedidos"].modified_column, p["pedidos"].created_column) == (
        "upsert", "updated_at", "Fecha")
    assert (p["pedidoslineas"].strategy, p["pedidoslineas"].parent) == ("child", "fk_lineas_pedido")
    assert p["auditoria"].strategy == "snapshot" and "no primary key" in p["auditoria"].note
    assert p["movimientos"].date_columns == ("FechaCarga",) and "Fecha not a partition date: NULL in 100%" in (
        p["movimientos"].note)
    assert p["pacientes"].strategy == "snapshot" and "birth or expiry" in p["pacientes"].note
    assert p["socios"].date_columns == ("FechaIngreso",) and "decades before" in p["socios"].note
    assert p["turnos"].strategy == "snapshot" and "in the future" in p["turnos"].note
    assert (p["historico"].strategy, p["historico"].date_columns) == ("event", ("Fecha",))
    assert p["paises"].strategy == "snapshot"
    assert all(t.strategy != "event" or not t.modified_column for t in p.values())

    # first_day: the oldest date of the chosen partition columns (not the 1941 birth dates).
    assert plan.first_day == dt.date(1985, 3, 1)

    # The stamp is recorded on the catalog column; other columns gain no field.
    catalog = load_catalog(catalog_path("plex", tmp_path))
    stamp = catalog.table("clientes").column("last_update")
    assert stamp.on_update and is_modification_stamp(stamp)
    assert not any(c.extra for c in catalog.table("clientes").columns if c.name != "last_update")
    assert catalog_path("plex", tmp_path).read_text().lower().count("on update current_timestamp") == 1

    # Two `id` primary keys with the same values are not a relationship; a named key is.
    pairs = {(r.table, r.referenced_table) for r in catalog.relationships}
    assert not pairs & {("marcas", "rubros"), ("rubros", "marcas")}
    assert ("pedidos", "clientes") in pairs

    # Nothing proposed loads until reviewed, and discover says how to accept.
    assert plan.included == [] and plan.pending_review == sorted(p) == report.pending_review
    message = lines[-1]
    assert "not loaded until reviewed" in message and "historico" in message
    assert "`plex-etl accept --source plex`" in message and str(plan_path("plex", tmp_path)) in message


def test_a_newcomers_plan_on_decades_of_data_loads_once_accepted(source, tmp_path):
    """A 1985-2006 database: the generated plan, accepted as it is, gives a rolling window of
    daily partitions (the first holding the 21 years of history), not 15,000 of them."""
    run_discover(source, directory=tmp_path, log=lambda _line: None)
    path = plan_path("plex", tmp_path)
    header = path.read_text().split("tables:")[0]
    proposed = load_plan(path, "plex").pending_review
    assert accept_proposals(path, "plex") == proposed and len(proposed) == 12
    plan = load_plan(path, "plex")
    assert plan.pending_review == [] and len(plan.included) == 12
    assert path.read_text().split("tables:")[0] == header  # comments and defaults as written
    catalog, plan = load_source_catalog("plex", tmp_path)
    today = dt.date(2026, 11, 29)
    assets = build_source_assets(source, catalog, plan, "local", today=today)
    historico = next(a for a in assets if a.key.path[-1] == "historico")
    keys = historico.partitions_def.get_partition_keys(dt.datetime(2026, 11, 29, 12))
    assert keys[0] == "2026-10-01" and len(keys) == 60
    assert plan.first_day == dt.date(1985, 3, 1)  # the history floor: every older row keeps its own day
    with pytest.raises(PlanError, match="no proposed entry for historico"):
        accept_proposals(path, "plex", ["historico"])


def test_existing_plan_gets_a_first_day_hint_and_is_not_rewritten(source, tmp_path):
    run_discover(source, directory=tmp_path, log=lambda _line: None)
    path = plan_path("plex", tmp_path)
    reviewed = path.read_text().replace("    proposed: true\n", "")
    reviewed = reviewed.replace("first_day: 1985-03-01", "first_day: 2000-01-01")
    path.write_text(reviewed)
    lines: list[str] = []
    report = run_discover(source, directory=tmp_path, log=lines.append)
    assert path.read_text() == reviewed
    assert report.proposals == [] and report.pending_review == []
    assert len(report.hints) == 1 and "from 1985-03-01, before first_day 2000-01-01" in report.hints[0]
    assert report.hints[0] in lines
    plan = load_plan(path, "plex")
    assert {t.table for t in plan.included} == set(plan.tables)


@pytest.mark.parametrize("name", [
    "last_update", "updated_at", "modified", "fecha_modificacion", "FechaModificacion", "ultima_modificacion",
    "fecha_actualizacion", "ts_update", "ActualizadoEn", "LastUpdated", "UltimoCambio",
])
def test_modification_stamps_by_name(name):
    assert is_modification_stamp(Column(name, 1, "datetime", "datetime", True))


@pytest.mark.parametrize("name", ["Fecha", "FechaAlta", "created_at", "Emision", "FechaHora", "fecha_nacimiento"])
def test_other_dates_are_not_stamps(name):
    assert not is_modification_stamp(Column(name, 1, "datetime", "datetime", True))
    extra = Column(name, 1, "timestamp", "timestamp", False, extra="on update current_timestamp()")
    assert is_modification_stamp(extra)


@pytest.mark.parametrize("source_name", ["plex", "quantio"])
def test_committed_plans_have_nothing_pending_review(source_name):
    assert load_plan(plan_path(source_name, PACKAGE_CONFIG_DIR), source_name).pending_review == []


def test_large_tables_are_profiled_from_a_bounded_sample(source, tmp_path):
    run_discover(source, directory=tmp_path, log=lambda _line: None)
    table = load_catalog(catalog_path("plex", tmp_path)).table("historico")
    with connect(source) as connection:
        whole = profile_dates(connection, table)
        sampled = profile_dates(connection, replace(table, row_estimate=30_000_000))
    assert not whole["Fecha"].sampled and sampled["Fecha"].sampled
    # The indexed column's oldest date is exact (an index dive), not the sample's.
    assert whole["Fecha"].oldest == sampled["Fecha"].oldest == dt.date(1985, 3, 1)
    assert whole["Fecha"].newest == sampled["Fecha"].newest == dt.date(2006, 3, 1)
    assert whole["Baja"].null_ratio == sampled["Baja"].null_ratio == 1.0
