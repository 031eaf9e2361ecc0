"""Change capture in Dagster: polling -> capture -> polling on the binlog MariaDB (local warehouse).
What the code location says of captured tables, what the worker reports to the Dagster
instance (materializations with lag and position, the binlog_capture check, no run), and the
daily reconciliation over captured tables."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import dagster as dg
import pytest

from plex_etl.catalog.store import load_source_catalog
from plex_etl.cdc.worker import Worker, WorkerSettings
from plex_etl.defs.cdc import CAPTURE_CHECK, CAPTURE_FRESHNESS, CAPTURE_TAG, DagsterReporter
from plex_etl.defs.checks import RECONCILE_CHECK
from plex_etl.demo.capture import BINLOG_PORT
from plex_etl.mysql import create_engine
from plex_etl.sources import PACKAGE_CONFIG_DIR
from plex_etl_tests.cdc_support import APP_ORDERS, build_binlog_demo, execute
from plex_etl_tests.replication import build_defs, materialize


@pytest.fixture(scope="module")
def source(demo_end_date):
    return build_binlog_demo(demo_end_date)


def _set_capture(config, on: bool) -> None:
    plan = config / "plex.plan.yaml"
    text = (PACKAGE_CONFIG_DIR / "plex.plan.yaml").read_text()
    if on:
        for table in APP_ORDERS:
            text = text.replace(f"  {table}:\n", f"  {table}:\n    capture: binlog\n", 1)
    plan.write_text(text)


def _reconcile(defs) -> dict[str, bool]:
    """The daily reconciliation checks of the app-order tables, run once."""
    keys = [dg.AssetCheckKey(dg.AssetKey(["plex", t]), RECONCILE_CHECK) for t in APP_ORDERS]
    checks = dg.AssetSelection.checks(*keys)
    job = dg.define_asset_job("cdc_reconcile", selection=checks)
    scoped = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources)
    result = scoped.resolve_job_def("cdc_reconcile").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    return {e.asset_key.path[-1]: e.passed for e in result.get_asset_check_evaluations()
            if e.check_name == RECONCILE_CHECK}


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return found


def _captured_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, after: int):
    """The newest materialization of `key` after storage id `after` that applied row changes."""
    for record in instance.fetch_materializations(key, limit=20).records:
        metadata = record.asset_materialization.metadata
        if record.storage_id > after and metadata.get("inserts") and metadata["inserts"].value:
            return record
    return None


def test_polling_capture_polling(source, monkeypatch, tmp_path, demo_end_date):
    config = tmp_path / "config"
    shutil.copytree(PACKAGE_CONFIG_DIR, config)
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(config))
    monkeypatch.setenv("PLEX_MYSQL_DATABASE", source.database)
    monkeypatch.setenv("PLEX_MYSQL_PORT", str(BINLOG_PORT))
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    engine = create_engine(source)
    keys = [f"plex/{t}" for t in APP_ORDERS]
    order = dg.AssetKey(["plex", "apppedidos"])
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    # 1. Polling: every partition once.
    _set_capture(config, False)
    defs = build_defs()
    materialize(defs, keys, dt.date(2025, 1, 1), demo_end_date)
    # 2. Capture on: the tables say what they are, and leave every polling automation.
    _set_capture(config, True)
    defs = build_defs()
    assert not [s for s in defs.sensors if "cdc" in s.name]  # no sensor launching runs, no job
    assert not [j for j in defs.resolve_all_job_defs() if "cdc" in j.name]
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == order)
    assert spec.automation_condition is None and spec.freshness_policy == CAPTURE_FRESHNESS
    assert spec.tags[CAPTURE_TAG] == "binlog" and "captured from the binary log" in spec.description
    assert dg.AssetCheckKey(order, CAPTURE_CHECK) in defs.resolve_asset_graph().asset_check_keys
    assert spec.metadata["kept_current_by"].startswith("the capture worker `plex-etl capture --source plex`")
    assert "refresh" not in spec.metadata and "each_refresh_loads" not in spec.metadata  # no tier schedule
    # The worker, reporting to the instance (no run): its first copy, then a change.
    catalog, plan = load_source_catalog("plex")
    partitions = {t: defs.resolve_assets_def(dg.AssetKey(["plex", t])).partitions_def for t in plan.captured}
    settings = WorkerSettings(report_seconds=0.2, linger=0.05)
    reporter = DagsterReporter(instance, source, catalog, plan, partitions, settings.lag_warn_seconds)
    worker = Worker(source, catalog, plan, defs.resources["warehouse"].get(), "plex_analytics", reporter=reporter,
                    settings=settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        check = dg.AssetCheckKey(order, CAPTURE_CHECK)
        first = _wait(lambda: instance.event_log_storage.get_asset_check_execution_history(check, limit=1),
                      "the first copy's report")
        before = instance.fetch_materializations(order, limit=1).records[0].storage_id
        day = demo_end_date.isoformat()
        execute(
            engine,
            "INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, Fecha, cli_nombre) "
            f"SELECT 'CDC-DAG-1', IDPedidoOrigen, IDOrigen, '{day} 08:00:00', 'dagster' FROM apppedidos LIMIT 1",
            "UPDATE apppedidos SET Importe = 7 WHERE IDPedido = 'CDC-DAG-1'",
        )
        record = _wait(lambda: _captured_materialization(instance, order, before), "the change's report")
    finally:
        stop.set()
        thread.join(10)
        reporter.close(10)
    assert not thread.is_alive()
    materialization = record.asset_materialization
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["inserts"] == 1 and metadata["updates"] == 1 and metadata["deletes"] == 0
    assert isinstance(materialization.metadata["lag_seconds"], dg.FloatMetadataValue)
    assert 0 <= metadata["lag_seconds"] < 30 and ":" in metadata["position"]
    assert materialization.partition == day and record.run_id == ""  # today's partition, without a run
    assert first[0].event.dagster_event.event_specific_data.passed
    latest_check = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)[0]
    assert latest_check.event.dagster_event.event_specific_data.metadata["position"].value == metadata["position"]
    assert not instance.get_runs()  # no run for the capture
    checked = _reconcile(defs)
    assert checked == dict.fromkeys(APP_ORDERS, True), checked
    # 3. Back to polling: the automation returns; a reload of recent days picks up new changes.
    _set_capture(config, False)
    defs = build_defs()
    assert defs.resolve_assets_def(order).automation_conditions_by_key.get(order) is not None
    execute(engine, "UPDATE apppedidos SET Importe = 8 WHERE IDPedido = 'CDC-DAG-1'")
    materialize(defs, keys, demo_end_date - dt.timedelta(days=2), demo_end_date)
    assert _reconcile(defs) == dict.fromkeys(APP_ORDERS, True)
    execute(engine, "DELETE FROM apppedidos WHERE IDPedido = 'CDC-DAG-1'")
