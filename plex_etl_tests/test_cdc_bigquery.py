"""Change capture into BigQuery (the local emulator): inserts, updates, deletes, exactly once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.cdc.apply import step
from plex_etl.extract.spec import replicated_table
from plex_etl.mysql import create_engine
from plex_etl.reconcile import reconcile_table
from plex_etl_tests import bq_emulator
from plex_etl_tests.bq_emulator import bigquery_emulator  # noqa: F401
from plex_etl_tests.cdc_support import APP_ORDERS, build_binlog_demo, capture_plan, execute

pytestmark = pytest.mark.bigquery
DATASET = "cdc_bq"


def test_changes_reach_bigquery_exactly_once(bigquery_emulator, demo_end_date):  # noqa: F811
    source = build_binlog_demo(demo_end_date)
    catalog, plan = load_source_catalog("plex")
    plan = capture_plan(plan)
    warehouse = bq_emulator.warehouse(bigquery_emulator)
    engine = create_engine(source)
    first = step(source, catalog, plan, warehouse, DATASET)
    assert set(first.snapshots) == set(APP_ORDERS)
    day = demo_end_date.isoformat()
    victim = engine.connect().execute(sa.text("SELECT IDPedido FROM apppedidos ORDER BY IDPedido LIMIT 1")).scalar()
    execute(
        engine,
        "INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, Fecha, cli_nombre) "
        f"SELECT 'CDC-BQ-1', IDPedidoOrigen, IDOrigen, '{day} 08:00:00', 'bq' FROM apppedidos LIMIT 1",
        "UPDATE apppedidos SET Importe = 3 WHERE IDPedido = 'CDC-BQ-1'",
        *(f"DELETE FROM {t} WHERE IDPedido = '{victim}'" for t in APP_ORDERS[1:]),
        f"DELETE FROM apppedidos WHERE IDPedido = '{victim}'",
    )

    class Crash(Exception):
        pass

    def crash(stage: str) -> None:
        if stage == "committed":
            raise Crash(stage)

    with pytest.raises(Crash):  # committed, then killed before acknowledging
        step(source, catalog, plan, warehouse, DATASET, hook=crash)
    again = step(source, catalog, plan, warehouse, DATASET)
    assert again.events == 0
    with engine.connect() as connection:
        for table in APP_ORDERS:
            result = reconcile_table(connection, warehouse, replicated_table(catalog, plan, table, DATASET),
                                     demo_end_date)
            assert result.equal, result.describe()
    rows = warehouse.query(f"SELECT Importe FROM `{warehouse.project}.{DATASET}.plex_apppedidos` "
                           "WHERE IDPedido = 'CDC-BQ-1'")
    assert rows.column(0).to_pylist() == [3.0]
