"""Change capture in Dagster: polling -> capture -> polling on the binlog MariaDB (local warehouse),
the sensor, run metadata, and the daily reconciliation check over captured tables."""

from __future__ import annotations

import datetime as dt
import shutil
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from plex_etl.defs.checks import RECONCILE_CHECK
from plex_etl.mysql import create_engine
from plex_etl.sources import PACKAGE_CONFIG_DIR, get_source
from plex_etl_tests.cdc_support import APP_ORDERS, BINLOG_PORT, build_binlog_demo, execute
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
    # 1. Polling: every partition once.
    _set_capture(config, False)
    defs = build_defs()
    assert "plex_cdc_sensor" not in {s.name for s in defs.sensors}
    materialize(defs, keys, dt.date(2025, 1, 1), demo_end_date)
    # 2. Capture on: the sensor launches the job; the first run copies the tables whole.
    _set_capture(config, True)
    defs = build_defs()
    sensor = next(s for s in defs.sensors if s.name == "plex_cdc_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        requests = sensor(context)
    assert [r.job_name for r in (requests if isinstance(requests, list) else [requests])] in ([None], ["plex_cdc"])
    asset = defs.resolve_assets_def(dg.AssetKey(["plex", "apppedidos"]))
    assert asset.automation_conditions_by_key.get(dg.AssetKey(["plex", "apppedidos"])) is None
    job = defs.resolve_job_def("plex_cdc")
    first = job.execute_in_process(instance=instance)
    assert first.success
    day = demo_end_date.isoformat()
    execute(
        engine,
        "INSERT INTO apppedidos (IDPedido, IDPedidoOrigen, IDOrigen, Fecha, cli_nombre) "
        f"SELECT 'CDC-DAG-1', IDPedidoOrigen, IDOrigen, '{day} 08:00:00', 'dagster' FROM apppedidos LIMIT 1",
        "UPDATE apppedidos SET Importe = 7 WHERE IDPedido = 'CDC-DAG-1'",
    )
    second = job.execute_in_process(instance=instance)
    materializations = [e for e in second.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materializations[0].event_specific_data.metadata
    assert metadata["inserts"].value == 1 and metadata["updates"].value == 1 and metadata["deletes"].value == 0
    assert metadata["lag_seconds"].value >= 0 and ":" in metadata["position"].value
    landed = [e.event_specific_data.materialization for e in second.all_events
              if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert {m.asset_key.path[-1] for m in landed} == set(APP_ORDERS)  # today's partition: the table is current
    assert {m.partition for m in landed} == {dt.datetime.now(ZoneInfo(get_source('plex').time_zone)).date().isoformat()}
    checked = _reconcile(defs)
    assert checked == dict.fromkeys(APP_ORDERS, True), checked
    # 3. Back to polling: the automation returns; a reload of recent days picks up new changes.
    _set_capture(config, False)
    defs = build_defs()
    assert "plex_cdc_sensor" not in {s.name for s in defs.sensors}
    execute(engine, "UPDATE apppedidos SET Importe = 8 WHERE IDPedido = 'CDC-DAG-1'")
    materialize(defs, keys, demo_end_date - dt.timedelta(days=2), demo_end_date)
    assert _reconcile(defs) == dict.fromkeys(APP_ORDERS, True)
    execute(engine, "DELETE FROM apppedidos WHERE IDPedido = 'CDC-DAG-1'")
