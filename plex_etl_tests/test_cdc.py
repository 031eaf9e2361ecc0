"""Change capture from the binary log (plex_etl.cdc) on the binlog MariaDB, local warehouse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time

import pyarrow as pa
import pytest
import sqlalchemy as sa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.cdc.apply import step
from plex_etl.cdc.reader import CaptureError
from plex_etl.flavor import parse_flavor
from plex_etl.mysql import create_engine
from plex_etl.warehouse.base import CDC_POSITIONS_TABLE
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.cdc_support import (
    APP_ORDERS,
    DATASET,
    assert_equal_to_polling,
    build_binlog_demo,
    capture_plan,
    execute,
)


@pytest.fixture(scope="module")
def source(demo_end_date):
    return build_binlog_demo(demo_end_date)


@pytest.fixture(scope="module")
def engine(source):
    return create_engine(source)


@pytest.fixture(scope="module")
def catalog_plan():
    catalog, plan = load_source_catalog("plex")
    return catalog, capture_plan(plan)


def _until_caught_up(source, catalog, plan, warehouse, **kwargs):
    for _ in range(20):
        result = step(source, catalog, plan, warehouse, DATASET, **kwargs)
        if result.caught_up:
            return result
    raise AssertionError("change capture did not catch up")


def _new_order(engine, order_id: str, day: str) -> None:
    execute(
        engine,
        f"INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, IDRed, Fecha, IdEstado, FechaEstado, cli_nombre,"
        f" Importe) SELECT '{order_id}', IDPedidoOrigen, IDOrigen, IDRed, '{day} 10:00:00', IdEstado, NULL,"
        f" 'CDC test', 12.5 FROM apppedidos ORDER BY IDPedido LIMIT 1",
        f"INSERT INTO apppedidoslineas (IDPedido, IdProducto, Cantidad) SELECT '{order_id}', IdProducto, 2"
        f" FROM apppedidoslineas ORDER BY IdRegistro LIMIT 1",
    )


def test_inserts_updates_deletes_are_applied(source, engine, catalog_plan, demo_end_date, tmp_path):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    first = step(source, catalog, plan, warehouse, DATASET)
    assert set(first.snapshots) == set(APP_ORDERS)
    day = (demo_end_date - dt.timedelta(days=2)).isoformat()
    _new_order(engine, "CDC-INS-1", day)
    _new_order(engine, "CDC-INS-2", day)
    victim = engine.connect().execute(sa.text(
        "SELECT IDPedido FROM apppedidos WHERE IDPedido NOT LIKE 'CDC%' ORDER BY IDPedido LIMIT 1")).scalar()
    moved = engine.connect().execute(sa.text(
        "SELECT IDPedido FROM apppedidos WHERE IDPedido NOT LIKE 'CDC%' ORDER BY IDPedido DESC LIMIT 1")).scalar()
    execute(
        engine,
        "UPDATE apppedidos SET cli_nombre = 'updated', Importe = Importe + 1 WHERE IDPedido = 'CDC-INS-1'",
        # The order's day moves: its children's day moves with it (they have no event of their own).
        f"UPDATE apppedidos SET FechaEstado = '{demo_end_date.isoformat()} 09:30:00' WHERE IDPedido = '{moved}'",
        *(f"DELETE FROM {t} WHERE IDPedido = '{victim}'" for t in APP_ORDERS[1:]),
        f"DELETE FROM apppedidos WHERE IDPedido = '{victim}'",
        "DELETE FROM apppedidoslineas WHERE IDPedido = 'CDC-INS-2'",
        "DELETE FROM apppedidos WHERE IDPedido = 'CDC-INS-2'",
    )
    result = _until_caught_up(source, catalog, plan, warehouse)
    assert result.changes["apppedidos"]["inserts"] == 2
    assert result.changes["apppedidos"]["updates"] == 2
    assert result.changes["apppedidos"]["deletes"] == 2
    assert result.keys_deleted["apppedidos"] >= 1
    assert result.end > result.start
    rows = warehouse.query(f"SELECT cli_nombre FROM {DATASET}.plex_apppedidos WHERE IDPedido = 'CDC-INS-1'")
    assert rows.column(0).to_pylist() == ["updated"]
    assert warehouse.query(
        f"SELECT COUNT(*) FROM {DATASET}.plex_apppedidos WHERE IDPedido IN ('{victim}', 'CDC-INS-2')"
    ).column(0)[0].as_py() == 0
    assert_equal_to_polling(source, catalog, plan, warehouse, tmp_path, demo_end_date)
    # Nothing new: a step applies nothing (the position may move past other databases' writes
    # on the shared server).
    again = step(source, catalog, plan, warehouse, DATASET)
    assert again.events == 0 and again.end >= result.end and not again.rows_merged


class Crash(Exception):
    pass


@pytest.mark.parametrize("stage", ["read", "committed"])
def test_killed_step_resumes_without_gap_or_duplicate(source, engine, catalog_plan, demo_end_date, tmp_path, stage):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    step(source, catalog, plan, warehouse, DATASET)
    day = demo_end_date.isoformat()
    for i in range(3):
        _new_order(engine, f"CDC-KILL-{stage}-{i}", day)
    execute(engine, f"UPDATE apppedidos SET Importe = 99 WHERE IDPedido = 'CDC-KILL-{stage}-0'")
    before = warehouse.cdc_positions(DATASET, "plex")

    def crash(at: str) -> None:
        if at == stage:
            raise Crash(at)

    with pytest.raises(Crash):
        step(source, catalog, plan, warehouse, DATASET, hook=crash)
    after_crash = warehouse.cdc_positions(DATASET, "plex")
    landed = warehouse.query(
        f"SELECT COUNT(*) FROM {DATASET}.plex_apppedidos WHERE IDPedido LIKE 'CDC-KILL-{stage}-%'").column(0)[0]
    if stage == "read":  # nothing committed: same position, no row
        assert after_crash == before and landed.as_py() == 0
    else:  # committed, not acknowledged: the next step starts after the batch
        assert after_crash != before and landed.as_py() == 3
    execute(engine, f"DELETE FROM apppedidoslineas WHERE IDPedido = 'CDC-KILL-{stage}-1'",
            f"DELETE FROM apppedidos WHERE IDPedido = 'CDC-KILL-{stage}-1'")
    _until_caught_up(source, catalog, plan, warehouse)
    ids = warehouse.query(
        f"SELECT IDPedido, Importe FROM {DATASET}.plex_apppedidos WHERE IDPedido LIKE 'CDC-KILL-{stage}-%' "
        "ORDER BY 1").to_pylist()
    assert [(r["IDPedido"], r["Importe"]) for r in ids] == [
        (f"CDC-KILL-{stage}-0", 99.0), (f"CDC-KILL-{stage}-2", 12.5)]
    assert_equal_to_polling(source, catalog, plan, warehouse, tmp_path, demo_end_date)


# The server's own way (MariaDB: the snapshot's status variables), and Oracle MySQL's (a brief
# LOCK TABLES ... READ on a second connection while the snapshot starts, then the log's status
# statement), which MariaDB runs just as well: both must give a start position without a gap.
MYSQL_8 = parse_flavor("8.0.36", "MySQL Community Server - GPL")


@pytest.mark.parametrize("flavor", [None, MYSQL_8], ids=["server", "mysql-8.0-lock"])
def test_first_copy_under_concurrent_writes_has_no_gap(source, engine, catalog_plan, demo_end_date, tmp_path, flavor):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    stop = threading.Event()
    written = []
    prefix = f"CDC-CONC-{flavor.product if flavor else 'server'}-"

    def writer() -> None:
        i = 0
        while not stop.is_set():
            order = f"{prefix}{i}"
            _new_order(engine, order, demo_end_date.isoformat())
            if i % 3 == 1:
                execute(engine, f"UPDATE apppedidos SET Importe = {i} WHERE IDPedido = '{prefix}{i - 1}'")
            if i % 5 == 4:
                execute(engine, f"DELETE FROM apppedidoslineas WHERE IDPedido = '{prefix}{i - 2}'",
                        f"DELETE FROM apppedidos WHERE IDPedido = '{prefix}{i - 2}'")
            written.append(order)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        first = step(source, catalog, plan, warehouse, DATASET, flavor=flavor)
        assert set(first.snapshots) == set(APP_ORDERS)
        step(source, catalog, plan, warehouse, DATASET)
    finally:
        stop.set()
        thread.join()
    assert len(written) > 5
    _until_caught_up(source, catalog, plan, warehouse)
    assert_equal_to_polling(source, catalog, plan, warehouse, tmp_path, demo_end_date)


def test_mysql_start_position_without_lock_privilege_says_what_to_grant(source, engine, catalog_plan, tmp_path):
    catalog, plan = catalog_plan
    user = f"{source.database[:20]}_nolock"
    execute(engine, f"CREATE USER IF NOT EXISTS '{user}'@'%'", f"GRANT SELECT ON `{source.database}`.* TO '{user}'@'%'",
            f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")
    try:
        with pytest.raises(CaptureError, match=r"MySQL 8\.0\.36, which does not report the binary-log position.*"
                           rf"GRANT LOCK TABLES ON `{source.database}`\.\* TO the capture user"):
            step(dataclasses.replace(source, user=user), catalog, plan, LocalWarehouse(tmp_path / "w.duckdb"),
                 DATASET, flavor=MYSQL_8)
    finally:
        execute(engine, f"DROP USER IF EXISTS '{user}'@'%'")


def test_purged_position_stops_with_a_clear_message(source, catalog_plan, tmp_path):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    step(source, catalog, plan, warehouse, DATASET)
    stored = warehouse.cdc_positions(DATASET, "plex")
    warehouse.apply_changes(DATASET, "plex", [], dict.fromkeys(stored, "binlog.999999:4"), stored)
    with pytest.raises(CaptureError, match=r"binlog.999999:4 is no longer available.*resync"):
        step(source, catalog, plan, warehouse, DATASET)
    # Recovery: resync.
    result = step(source, catalog, plan, warehouse, DATASET, resync=APP_ORDERS)
    assert set(result.snapshots) == set(APP_ORDERS)
    assert "binlog.999999" not in str(warehouse.cdc_positions(DATASET, "plex"))


def test_schema_change_stops_the_table_with_a_clear_message(source, engine, catalog_plan, demo_end_date, tmp_path):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    step(source, catalog, plan, warehouse, DATASET)
    execute(engine, "ALTER TABLE apppedidospagos ADD COLUMN cdc_extra INT NULL")
    try:
        _new_order(engine, "CDC-DDL-1", demo_end_date.isoformat())
        result = _until_caught_up(source, catalog, plan, warehouse)
        assert set(result.stopped) == {"apppedidospagos"}
        assert "schema change of plex.apppedidospagos" in result.stopped["apppedidospagos"]
        assert "ALTER TABLE apppedidospagos ADD COLUMN cdc_extra" in result.stopped["apppedidospagos"]
        assert "resync" in result.stopped["apppedidospagos"]
        # The other tables go on past the DDL.
        assert warehouse.query(
            f"SELECT COUNT(*) FROM {DATASET}.plex_apppedidos WHERE IDPedido = 'CDC-DDL-1'").column(0)[0].as_py() == 1
        again = step(source, catalog, plan, warehouse, DATASET)
        assert set(again.stopped) == {"apppedidospagos"}
    finally:
        execute(engine, "ALTER TABLE apppedidospagos DROP COLUMN cdc_extra")
    # Recovery after the catalog agrees again: resync the table.
    result = step(source, catalog, plan, warehouse, DATASET, resync=["apppedidospagos"])
    assert "apppedidospagos" in result.snapshots and not result.stopped
    _until_caught_up(source, catalog, plan, warehouse)
    assert_equal_to_polling(source, catalog, plan, warehouse, tmp_path, demo_end_date)


def test_positions_table_is_in_the_warehouse(source, catalog_plan, tmp_path):
    catalog, plan = catalog_plan
    warehouse = LocalWarehouse(tmp_path / "w.duckdb")
    step(source, catalog, plan, warehouse, DATASET)
    rows = warehouse.query(f"SELECT table_name, position FROM {DATASET}.{CDC_POSITIONS_TABLE}")
    assert sorted(rows.column(0).to_pylist()) == sorted(APP_ORDERS)
    assert all(":" in p for p in rows.column(1).to_pylist())
    assert isinstance(rows, pa.Table)


def test_key_images_equal_the_library_for_every_column_type(source, engine):
    """The reader steps over columns by the size their type gives and decodes only the wanted
    ones: for every column type, the wanted values must be the library's own decoding."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    from plex_etl.cdc.reader import KeyImages, _images, connection_settings, current_position, replica_server_id

    columns = (
        "a TINYINT, b TINYINT UNSIGNED, c SMALLINT, d MEDIUMINT, e INT UNSIGNED, f BIGINT, g BIGINT UNSIGNED, "
        "h FLOAT, i DOUBLE, j DECIMAL(5,2), k DECIMAL(30,10), l DECIMAL(65,30), m DATE, n DATETIME, "
        "o DATETIME(3), p DATETIME(6), q TIMESTAMP NULL, r TIMESTAMP(4) NULL, s TIME, t TIME(1), u TIME(6), "
        "v YEAR, w CHAR(10) CHARACTER SET latin1, x VARCHAR(300) CHARACTER SET utf8mb4, y TEXT, z MEDIUMTEXT, "
        "aa BLOB, ab LONGBLOB, ac ENUM('x','y','z'), ad SET('p','q','r'), ae BIT(1), af BIT(17), ag JSON, "
        "ah BINARY(4), ai VARBINARY(10), aj POINT, "
        "k_int INT NOT NULL, k_text VARCHAR(50) CHARACTER SET latin1 NULL, PRIMARY KEY (k_int)"
    )
    full = (
        "-1, 255, -300, -8000000, 4000000000, -9000000000000000000, 18000000000000000000, 1.5, -2.25, "
        "-123.45, 12345678901234567890.0123456789, -1.5, '2024-02-29', '2024-02-29 23:59:59', "
        "'2024-01-01 00:00:00.123', '2024-01-01 00:00:00.123456', '2024-03-01 10:00:00', "
        "'2024-03-01 10:00:00.1234', '-838:59:59', '12:00:00.5', '-01:02:03.000004', 2024, 'año', "
        "CONCAT('€', REPEAT('x', 280)), REPEAT('t', 300), 'mediumtext', X'00FF', REPEAT(X'AB', 70000), 'y', 'p,r', "
        "b'1', b'10101010101010101', '{\"k\": [1, 2]}', X'01020304', X'0A0B', POINT(1, 2)"
    )
    nulls = ", ".join(["NULL"] * 36)
    wanted = ("k_int", "k_text")
    start = current_position(source)
    execute(
        engine,
        "DROP TABLE IF EXISTS cdc_types",
        f"CREATE TABLE cdc_types ({columns})",
        f"INSERT INTO cdc_types VALUES ({full}, 1, 'uno'), ({nulls}, 2, NULL), ({full}, -3, 'ñandú')",
        f"INSERT INTO cdc_types VALUES ({nulls}, 4, 'cuatro')",
        "UPDATE cdc_types SET k_text = CONCAT(COALESCE(k_text, ''), 'ü'), a = 7 WHERE k_int < 3",
        "UPDATE cdc_types SET k_int = 40 WHERE k_int = 4",
        "DELETE FROM cdc_types WHERE k_int IN (1, 2)",
    )

    def events():
        stream = BinLogStreamReader(
            connection_settings=connection_settings(source), server_id=replica_server_id(source),
            resume_stream=True, log_file=start.file, log_pos=start.pos, blocking=False,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], only_tables=["cdc_types"],
            only_schemas=[source.database], freeze_schema=True,
        )
        try:
            yield from iter(stream.fetchone, None)
        finally:
            stream.close()

    try:
        library = [(len(e.rows), [{c: image[c] for c in wanted} for image in _images(e.rows)]) for e in events()]
        reader = KeyImages()
        stepped = [reader.read(e, wanted) for e in events()]
    finally:
        execute(engine, "DROP TABLE IF EXISTS cdc_types")
    assert sum(n for n, _ in library) == 10  # events hold one or more rows (the server splits large ones)
    assert stepped == library
    assert all(plan is not None for _, _, plan in reader._plans.values())  # stepped over, not the library
