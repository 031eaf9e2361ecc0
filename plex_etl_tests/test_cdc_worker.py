"""The capture worker (`plex-etl capture`) on the binlog MariaDB, local warehouse: it runs, a
second worker of the source is refused, a resync is asked of the running worker, SIGTERM under
writes stops it within seconds with the tables exact; a lost lock stops it."""

from __future__ import annotations

import signal
import threading
import time

import pymysql
import pytest
import sqlalchemy as sa

from plex_etl.catalog.store import load_source_catalog
from plex_etl.cdc.apply import step
from plex_etl.cdc.reader import connection_settings
from plex_etl.cdc.worker import CaptureLock, LockLost, Worker, WorkerSettings, lock_name
from plex_etl.demo.capture import Writer, capture_config, start_worker, stop_worker, wait_for, worker_environment
from plex_etl.mysql import create_engine
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.cdc_support import APP_ORDERS, DATASET, assert_equal_to_polling, build_binlog_demo, capture_plan


@pytest.fixture(scope="module")
def source(demo_end_date):
    return build_binlog_demo(demo_end_date)


def test_worker_refuses_a_second_takes_a_resync_and_stops_on_sigterm(source, tmp_path, demo_end_date, monkeypatch,
                                                                    capsys):
    import dagster as dg

    from plex_etl.cli import main

    path = tmp_path / "w.duckdb"
    env = worker_environment(capture_config(tmp_path), source.database,
                             {"PLEX_ETL_WAREHOUSE": "local", "PLEX_ETL_LOCAL_WAREHOUSE": str(path)},
                             tmp_path / "dagster_home")
    warehouse = LocalWarehouse(path)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log=log)
    engine = create_engine(source)
    writer = Writer(engine, 40.0, 6.0, f"W-{time.time_ns()}-")
    try:
        wait_for(lambda: len(_positions(warehouse)) == len(APP_ORDERS) or worker.poll() is not None, 120,
                 "the first copy")
        assert worker.poll() is None, log.read_text()
        for name, value in env.items():  # a second worker here, for the same source and warehouse
            monkeypatch.setenv(name, value)
        assert main(["capture", "--source", "plex", "--no-report"]) == 3
        refused = capsys.readouterr().err
        assert "another capture worker of plex is running" in refused
        assert "one worker per source and warehouse" in refused
        assert main(["capture", "--source", "plex", "--resync", "apppedidospagos"]) == 0
        assert "resync of apppedidospagos requested from the running worker" in capsys.readouterr().out
        with engine.begin() as connection:  # its next commit finds the request (else within state_seconds)
            connection.execute(sa.text("UPDATE apppedidos SET Importe = Importe + 1 ORDER BY IDPedido LIMIT 1"))
        wait_for(lambda: log.read_text().count("plex.apppedidospagos: first copy") == 2, 90, "the requested resync")
        writer.start()
        time.sleep(3.0)
        stopping = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        stopped_in = time.monotonic() - stopping
    finally:
        stop_worker(worker)
        writer.join(30)
    output = log.read_text()
    assert code == 0, output
    assert stopped_in < 5.0, output
    assert "stopping after the batch under way" in output and "capture of plex stopped" in output
    # What the worker committed is exact: caught up from there, the tables equal MySQL.
    catalog, plan = load_source_catalog("plex")
    plan = capture_plan(plan)
    while not step(source, catalog, plan, warehouse, DATASET).caught_up:
        pass
    assert_equal_to_polling(source, catalog, plan, warehouse, tmp_path, demo_end_date)
    # The worker reported the tables to the instance of its DAGSTER_HOME, without a run.
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey(["plex", "apppedidos"]))
        assert latest is not None and latest.run_id == ""
        assert "lag_seconds" in latest.asset_materialization.metadata
        assert not instance.get_runs()


def test_a_worker_that_loses_its_lock_stops(source, tmp_path):
    catalog, plan = load_source_catalog("plex")
    plan = capture_plan(plan)
    lock = CaptureLock(source, lock_name(source, f"local:{tmp_path}:{DATASET}"))
    lock.acquire()
    worker = Worker(source, catalog, plan, LocalWarehouse(tmp_path / "w.duckdb"), DATASET, lock=lock,
                    settings=WorkerSettings(linger=0.05))
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: worker.capture.states is not None and len(worker.capture.states) == len(APP_ORDERS), 60,
                 "the first copy")
        (holder,) = _one(source, f"SELECT IS_USED_LOCK('{lock.name}')")
        _one(source, f"KILL {int(holder)}")  # as when its connection drops
        thread.join(30)
    finally:
        stop.set()
        thread.join(10)
        lock.release()
    assert failures and isinstance(failures[0], LockLost), failures
    assert "no longer held" in str(failures[0]) or "lock's connection failed" in str(failures[0])


def _positions(warehouse: LocalWarehouse) -> dict[str, str]:
    try:
        return warehouse.cdc_positions(DATASET, "plex")
    except Exception:  # not created yet, or the worker holds the file
        return {}


def _one(source, sql: str) -> tuple:
    connection = pymysql.connect(**connection_settings(source), autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone() or ()
    finally:
        connection.close()


def test_worker_cli_names_what_is_missing(tmp_path, monkeypatch, capsys):
    from plex_etl.cli import main

    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(capture_config(tmp_path, tables=())))
    assert main(["capture", "--source", "plex"]) == 2
    assert "no table of plex is captured: add `capture: binlog`" in capsys.readouterr().err
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(capture_config(tmp_path)))
    assert main(["capture", "--source", "plex", "--resync", "apppedidos_typo"]) == 2
    assert "apppedidos_typo: not captured tables of plex" in capsys.readouterr().err
