"""Value fidelity: for every table of both demo databases, per-column checksums computed in
MySQL and in the local warehouse agree (zero dates, which become NULL, are left out of both).
"""

import datetime as dt
import math
from decimal import Decimal

import dagster as dg
import pytest
import sqlalchemy as sa

from plex_etl.catalog.relationships import quote
from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.checks import RECONCILE_CHECK
from plex_etl.extract.spec import ReplicatedTable, replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.mysql import create_engine
from plex_etl.warehouse.base import Warehouse
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.conftest import TEST_DAYS
from plex_etl_tests.replication import build_defs, materialize, point_at_test_databases

DATASET = "plex_analytics"
EXACT = ("INT64", "NUMERIC", "BIGNUMERIC", "BOOL")


def family(bigquery_type: str) -> str:
    return bigquery_type.split("(")[0]


def mysql_checksums(column: str, kind: str, warehouse: str = "local") -> list[str]:
    """Per-column checksums over MySQL rows `x`, comparable with `warehouse_checksums`."""
    c = f"x.{quote(column)}"
    if kind == "JSON" and warehouse == "bigquery":
        # BigQuery's JSON type keeps the value, not the text: it serialises compactly.
        return [f"COUNT({c})", f"SUM(CHAR_LENGTH(JSON_COMPACT({c})))"]
    valid_date = f"(YEAR({c}) > 0 AND MONTH({c}) > 0 AND DAYOFMONTH({c}) > 0)"
    if kind in EXACT:
        return [f"COUNT({c})", f"SUM({c})"]
    if kind == "FLOAT64":
        return [f"COUNT({c})", f"SUM({c})", f"MIN({c})", f"MAX({c})"]
    # Content fingerprint: the sum of the first 32 bits of each value's MD5 (text as UTF-8).
    text = f"CONVERT({c} USING utf8mb4)"
    if kind == "JSON":
        return [f"COUNT({c})", f"SUM(CHAR_LENGTH({c}))"]
    if kind == "STRING":
        return [f"COUNT({c})", f"SUM(CHAR_LENGTH({c}))", f"SUM(CONV(SUBSTR(MD5({text}), 1, 8), 16, 10))"]
    if kind == "BYTES":
        return [f"COUNT({c})", f"SUM(LENGTH({c}))", f"SUM(CONV(SUBSTR(MD5({c}), 1, 8), 16, 10))"]
    if kind == "DATE":
        return [f"COUNT(CASE WHEN {valid_date} THEN 1 END)",
                f"SUM(CASE WHEN {valid_date} THEN DATEDIFF({c}, '1970-01-01') END)"]
    if kind in ("DATETIME", "TIMESTAMP"):
        return [f"COUNT(CASE WHEN {valid_date} THEN 1 END)",
                f"SUM(CASE WHEN {valid_date} THEN TIMESTAMPDIFF(MICROSECOND, '1970-01-01', {c}) END)"]
    raise AssertionError(f"no checksum for {kind}")


def warehouse_checksums(column: str, kind: str, warehouse: str = "local") -> list[str]:
    """The warehouse side of `mysql_checksums`: DuckDB SQL (local) or GoogleSQL (bigquery)."""
    if warehouse == "bigquery":
        return _bigquery_checksums(column, kind)
    c = f'"{column}"'
    if kind in EXACT:
        return [f"COUNT({c})", f"SUM(CAST({c} AS DECIMAL(38, 10)))" if kind != "BOOL" else f"SUM(CAST({c} AS INT))"]
    if kind == "FLOAT64":
        return [f"COUNT({c})", f"SUM({c})", f"MIN({c})", f"MAX({c})"]
    fingerprint = f"SUM(('0x' || SUBSTR(MD5({c}), 1, 8))::BIGINT)"
    if kind == "JSON":
        return [f"COUNT({c})", f"SUM(LENGTH(CAST({c} AS VARCHAR)))"]
    if kind == "STRING":
        return [f"COUNT({c})", f"SUM(LENGTH({c}))", fingerprint]
    if kind == "BYTES":
        return [f"COUNT({c})", f"SUM(OCTET_LENGTH({c}))", fingerprint]
    if kind == "DATE":
        return [f"COUNT({c})", f"SUM({c} - DATE '1970-01-01')"]
    if kind in ("DATETIME", "TIMESTAMP"):
        return [f"COUNT({c})", f"SUM(EPOCH_US({c}))"]
    raise AssertionError(f"no checksum for {kind}")


def _bigquery_checksums(column: str, kind: str) -> list[str]:
    c = f"`{column}`"
    if kind == "INT64":
        return [f"COUNT({c})", f"SUM(CAST({c} AS NUMERIC))"]  # INT64 sums may overflow
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return [f"COUNT({c})", f"SUM({c})"]
    if kind == "BOOL":
        return [f"COUNT({c})", f"SUM(CAST({c} AS INT64))"]
    if kind == "FLOAT64":
        return [f"COUNT({c})", f"SUM({c})", f"MIN({c})", f"MAX({c})"]
    fingerprint = f"SUM(CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5({c})), 1, 8)) AS INT64))"
    if kind == "STRING":
        return [f"COUNT({c})", f"SUM(LENGTH({c}))", fingerprint]
    if kind == "JSON":  # TO_JSON_STRING(NULL) is 'null', not NULL
        return [f"COUNT({c})", f"SUM(IF({c} IS NULL, NULL, LENGTH(TO_JSON_STRING({c}))))"]
    if kind == "BYTES":
        return [f"COUNT({c})", f"SUM(BYTE_LENGTH({c}))", fingerprint]
    if kind == "DATE":
        return [f"COUNT({c})", f"SUM(UNIX_DATE({c}))"]
    if kind == "DATETIME":
        return [f"COUNT({c})", f"SUM(UNIX_MICROS(TIMESTAMP({c}, 'UTC')))"]
    if kind == "TIMESTAMP":
        return [f"COUNT({c})", f"SUM(UNIX_MICROS({c}))"]
    raise AssertionError(f"no checksum for {kind}")


def same(a, b) -> bool:
    if a is None or b is None:
        return (a in (None, 0)) and (b in (None, 0))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return Decimal(str(a)) == Decimal(str(b))


def compare_table(engine: sa.Engine, warehouse: Warehouse, spec: ReplicatedTable, start: dt.date,
                  today: dt.date) -> list[str]:
    first = today if spec.plan.strategy == "snapshot" else start
    rows_sql = partition_query(spec, first, today).rows_sql
    kinds = [family(c.bigquery_type) for c in spec.target.columns]
    mysql_exprs = [
        e for col, k in zip(spec.table.columns, kinds, strict=True)
        for e in mysql_checksums(col.name, k, warehouse.kind)
    ]
    with engine.connect() as connection:
        mysql = connection.execute(sa.text(f"SELECT COUNT(*), {', '.join(mysql_exprs)} FROM ({rows_sql}) x")).one()
    wh_exprs = [
        e for col, k in zip(spec.target.columns, kinds, strict=True)
        for e in warehouse_checksums(col.name, k, warehouse.kind)
    ]
    where = f"_etl_partition_date BETWEEN DATE '{first}' AND DATE '{today}'"
    landed = warehouse.query(
        f"SELECT COUNT(*), {', '.join(wh_exprs)} FROM {DATASET}.{spec.target.name} WHERE {where}"
    )
    values = [landed.column(i)[0].as_py() for i in range(landed.num_columns)]
    labels = ["rows"] + [
        f"{col.name}:{e.split('(')[0]}" for col, k in zip(spec.table.columns, kinds, strict=True)
        for e in mysql_checksums(col.name, k, warehouse.kind)
    ]
    return [
        f"{spec.name}.{label}: MySQL {m!r} warehouse {w!r}"
        for label, m, w in zip(labels, mysql, values, strict=True)
        if not same(m, w)
    ]


def replicate(defs: dg.Definitions, sources: tuple[str, ...], start: dt.date, today: dt.date,
              instance: dg.DagsterInstance | None = None) -> None:
    """Materialize every included table of `sources`: dated ones over [start, today], snapshots
    for today; every run succeeds and every asset check passes."""
    for source in sources:
        _, plan = load_source_catalog(source)
        dated = [f"{source}/{p.table}" for p in plan.included if p.strategy != "snapshot"]
        snapshots = [f"{source}/{p.table}" for p in plan.included if p.strategy == "snapshot"]
        for keys, first in ((dated, start), (snapshots, today)):
            result = materialize(defs, keys, first, today, instance=instance)
            assert result.success
            failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
            assert not failed, [(e.asset_key, e.check_name, e.description) for e in failed]


def source_problems(engine: sa.Engine, warehouse: Warehouse, source: str, start: dt.date,
                    today: dt.date) -> list[str]:
    """Checksum differences between MySQL and the warehouse over every table of `source`."""
    catalog, plan = load_source_catalog(source)
    problems = []
    for p in sorted(plan.included, key=lambda p: p.table):
        spec = replicated_table(catalog, plan, p.table, DATASET)
        problems += compare_table(engine, warehouse, spec, start, today)
    return problems


@pytest.fixture(scope="module")
def replicated(demo_sources, demo_end_date, tmp_path_factory):
    path = tmp_path_factory.mktemp("fidelity") / "warehouse.duckdb"
    start = demo_end_date - dt.timedelta(days=TEST_DAYS + 5)
    with pytest.MonkeyPatch.context() as patch:
        point_at_test_databases(patch, demo_sources, path)
        defs = build_defs()
        instance = dg.DagsterInstance.ephemeral()  # the loads' history: the orphan checks read it
        replicate(defs, ("plex", "quantio"), start, demo_end_date, instance)
        yield {"warehouse": LocalWarehouse(path), "start": start, "today": demo_end_date, "defs": defs,
               "instance": instance}


@pytest.mark.parametrize("source", ["plex", "quantio"])
def test_every_column_of_every_table_agrees(replicated, demo_sources, source):
    engine = create_engine(demo_sources[source])
    problems = source_problems(engine, replicated["warehouse"], source, replicated["start"], replicated["today"])
    assert not problems, "\n".join(problems)


def test_views_return_rows_that_agree_with_mysql(replicated, demo_sources):
    defs: dg.Definitions = replicated["defs"]
    views = [k.to_user_string() for a in defs.assets for k in a.keys if k.path[0] == "views"]
    assert len(views) == 4
    assert materialize(defs, views, None).success
    warehouse = replicated["warehouse"]
    engine = create_engine(demo_sources["plex"])
    start, today = replicated["start"], replicated["today"]

    def one(sql: str):
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).one()

    facturas = warehouse.query(
        f"SELECT COUNT(*) AS n, SUM(lineas) AS lineas, ROUND(SUM(total_pagos), 2) AS pagos "
        f"FROM {DATASET}.v_facturas_consolidated"
    ).to_pylist()[0]
    window = f"Emision >= '{start}' AND Emision < '{today + dt.timedelta(days=1)}'"
    mysql = one(
        f"SELECT COUNT(*), (SELECT COUNT(*) FROM factlineas l JOIN factcabecera c USING (IDComprobante) "
        f"WHERE {window}), (SELECT ROUND(SUM(p.Importe), 2) FROM factpagos p JOIN factcabecera c "
        f"USING (IDComprobante) WHERE {window}) FROM factcabecera WHERE {window}"
    )
    assert (facturas["n"], facturas["lineas"]) == (mysql[0], mysql[1]) and facturas["n"] > 0
    assert math.isclose(facturas["pagos"], float(mysql[2]), rel_tol=1e-9)

    ventas = warehouse.query(
        f"SELECT SUM(unidades) AS u, COUNT(DISTINCT Sucursal) AS s FROM {DATASET}.v_ventas_analysis"
    ).to_pylist()[0]
    mysql = one(
        "SELECT SUM(l.Cantidad), COUNT(DISTINCT c.Sucursal) FROM factlineas l JOIN factcabecera c "
        f"USING (IDComprobante) WHERE {window}"
    )
    assert (ventas["u"], ventas["s"]) == (mysql[0], mysql[1])

    stock = warehouse.query(
        f"SELECT COUNT(*) AS n, SUM(Cantidad) AS q FROM {DATASET}.v_inventory_status"
    ).to_pylist()[0]
    assert (stock["n"], stock["q"]) == tuple(one("SELECT COUNT(*), SUM(Cantidad) FROM stock"))

    recetas = warehouse.query(
        f"SELECT COUNT(*) AS n, SUM(renglones) AS r FROM {DATASET}.v_prescriptions_tracking"
    ).to_pylist()[0]
    assert recetas["n"] > 0
    total = one("SELECT COUNT(*) FROM reccabecera")[0]
    assert recetas["n"] <= total


def test_no_orphans_across_replicated_relationships(replicated):
    defs: dg.Definitions = replicated["defs"]
    checks = list(defs.asset_checks or [])
    orphan_keys = [k for c in checks for k in c.check_keys if k.name.startswith("no_orphans_")]
    reconcile_keys = [k for c in checks for k in c.check_keys if k.name == RECONCILE_CHECK]
    result = dg.materialize(
        [*defs.assets, *checks],
        selection=dg.AssetSelection.checks(*orphan_keys, *reconcile_keys),
        resources=defs.resources,
        instance=replicated["instance"],
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(orphan_keys) + len(reconcile_keys) and len(orphan_keys) > 50
    failed = [(e.asset_key.to_user_string(), e.check_name, e.description) for e in evaluations if not e.passed]
    assert not failed, failed  # the whole-table reconciliation checks pass too
    orphans = [e for e in evaluations if e.check_name.startswith("no_orphans_")]
    assert len(orphans) > 50 and all(e.metadata["orphans"].value == 0 for e in orphans)


def test_orphan_check_names_the_missing_parents(replicated):
    """An invoice removed from the warehouse after its day was loaded again (so after its lines
    landed: the warehouse should hold it) is named by its lines' orphan check. It is put back
    whatever happens (order-independent)."""
    import duckdb

    defs: dg.Definitions = replicated["defs"]
    warehouse = replicated["warehouse"]
    victim = warehouse.query(f"SELECT MIN(IDComprobante) AS id FROM {DATASET}.plex_factlineas").to_pylist()[0]["id"]
    lines = warehouse.query(
        f"SELECT COUNT(*) AS n FROM {DATASET}.plex_factlineas WHERE IDComprobante = {victim}"
    ).to_pylist()[0]["n"]
    day = warehouse.query(f"SELECT _etl_partition_date AS d FROM {DATASET}.plex_factcabecera "
                          f"WHERE IDComprobante = {victim}").to_pylist()[0]["d"]
    assert materialize(defs, ["plex/factcabecera"], day, instance=replicated["instance"]).success
    saved = f"{DATASET}.plex_factcabecera_saved_by_test"
    with duckdb.connect(str(warehouse.path)) as connection:
        connection.execute(f"CREATE TABLE {saved} AS SELECT * FROM {DATASET}.plex_factcabecera "
                           f"WHERE IDComprobante = {victim}")
        connection.execute(f"DELETE FROM {DATASET}.plex_factcabecera WHERE IDComprobante = {victim}")
    try:
        checks = list(defs.asset_checks or [])
        key = dg.AssetCheckKey(dg.AssetKey(["plex", "factlineas"]), "no_orphans_FK_FactLineas_FactCabecera")
        result = dg.materialize(
            [*defs.assets, *checks], selection=dg.AssetSelection.checks(key), resources=defs.resources,
            instance=replicated["instance"],
        )
    finally:
        with duckdb.connect(str(warehouse.path)) as connection:
            connection.execute(f"INSERT INTO {DATASET}.plex_factcabecera SELECT * FROM {saved}")
            connection.execute(f"DROP TABLE {saved}")
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["orphans"].value == lines
    assert evaluation.metadata["waiting_for_parent"].value == 0
    assert f"IDComprobante={victim} (day {day})" in evaluation.description
