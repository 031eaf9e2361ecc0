"""The alert sensor (plex_etl.defs.alerts) on Dagster's stock SQLite instance, with real runs and a
local webhook server that receives the real POSTs: every failed check and failed run posted once,
in completion order, with its cause; a blocking check's failure carried by its own alert and named
by the run's; stale tables; nothing lost or doubled while the webhook is down. The production
instance (PostgreSQL, a real dagster-daemon) runs the same sensor in test_deploy_daemon.py."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from plex_etl.defs.alerts import ALERT_SENSOR, ALERT_WEBHOOK_ENV, alerts_sensor


class Webhook(http.server.BaseHTTPRequestHandler):
    """Records the text of each POST (marked when it did not come as JSON); answers 200."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        json_type = self.headers["Content-Type"] == "application/json"
        self.server.received.append(body["text"] if json_type else f"not JSON: {body}")  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[str]]:
    """A local webhook server, set as PLEX_ETL_ALERT_WEBHOOK; the texts it received."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Webhook)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/hook")
    yield server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """Dagster's stock SQLite instance (run-sharded event log), as the local dagster.yaml has it."""
    (tmp_path / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {tmp_path}\n"
                                           "telemetry: {enabled: false}\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


class Ticks:
    """Evaluates the sensor as the daemon does, carrying its cursor from tick to tick."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor: str | None = None

    def __call__(self) -> str:
        result = alerts_sensor(dg.build_sensor_context(instance=self.instance, cursor=self.cursor))
        self.cursor = result.cursor
        return result.skip_reason.skip_message if result.skip_reason else ""


# --- two runs whose checks finish out of planning order ------------------------------------------

gate = threading.Event()  # run 1's check waits for it
planned_first_started = threading.Event()


@dg.asset
def orders() -> int:
    return 1


@dg.multi_asset_check(specs=[dg.AssetCheckSpec("row_count_matches_mysql", asset=orders, blocking=True)])
def orders_checks():
    planned_first_started.set()
    assert gate.wait(60)
    yield dg.AssetCheckResult(asset_key="orders", check_name="row_count_matches_mysql", passed=False,
                              description="2026-11-20: MySQL 4 rows, warehouse 3")


@dg.asset
def lines() -> int:
    return 1


@dg.multi_asset_check(specs=[
    dg.AssetCheckSpec("schema_matches_catalog", asset=lines, blocking=True),
    dg.AssetCheckSpec("warehouse_equals_mysql", asset=lines),
])
def lines_checks():
    # Planned in spec order; the later one completes first.
    yield dg.AssetCheckResult(asset_key="lines", check_name="warehouse_equals_mysql", passed=False,
                              severity=dg.AssetCheckSeverity.ERROR, description="2026-10-02: 1 missing (key 17)")
    yield dg.AssetCheckResult(asset_key="lines", check_name="schema_matches_catalog", passed=False,
                              description="missing columns: Importe")


@dg.asset
def failing_load() -> None:
    raise ValueError("plex.factlineas: column Importe: MySQL value 1e70 does not convert")


def test_every_failure_is_posted_once_in_completion_order_with_its_cause(instance, webhook):
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    tick = Ticks(instance)
    assert "initialised" in tick()
    assert len(webhook) == 0

    # Run 1 plans its check, which waits; run 2's two checks fail meanwhile, the later planned first.
    first = threading.Thread(target=lambda: dg.materialize([orders, orders_checks], instance=instance,
                                                           raise_on_error=False))
    first.start()
    try:
        assert planned_first_started.wait(60)
        second = dg.materialize([lines, lines_checks], instance=instance, raise_on_error=False)
        assert not second.success  # its blocking check failed
        tick()
    finally:
        gate.set()  # run 1's check, planned first, completes last
    first.join(60)
    run2 = second.run_id
    assert webhook == [
        f"plex_etl check warehouse_equals_mysql failed on lines\n2026-10-02: 1 missing (key 17)\nrun {run2}",
        f"plex_etl blocking check schema_matches_catalog failed on lines\nmissing columns: Importe\nrun {run2}",
        f"plex_etl run {run2} (__ephemeral_asset_job__) failed\n"
        "step lines_checks: blocking check failed: schema_matches_catalog on lines (its alert above has the cause)",
    ]

    [run1] = [r for r in instance.get_run_records() if r.dagster_run.run_id != second.run_id]
    failed = dg.materialize([failing_load], instance=instance, raise_on_error=False)
    instance.report_runless_asset_event(FreshnessStateChange(
        key=dg.AssetKey(["quantio", "orders"]), new_state=FreshnessState.FAIL,
        previous_state=FreshnessState.WARN, state_change_timestamp=time.time()))
    instance.report_runless_asset_event(FreshnessStateChange(  # a recovery is not an alert
        key=dg.AssetKey(["quantio", "orders"]), new_state=FreshnessState.PASS,
        previous_state=FreshnessState.FAIL, state_change_timestamp=time.time()))
    tick()
    run1_id = run1.dagster_run.run_id
    assert webhook[3:] == [
        f"plex_etl blocking check row_count_matches_mysql failed on orders\n2026-11-20: MySQL 4 rows, "
        f"warehouse 3\nrun {run1_id}",
        f"plex_etl run {run1_id} (__ephemeral_asset_job__) failed\n"
        "step orders_checks: blocking check failed: row_count_matches_mysql on orders (its alert above has the cause)",
        f"plex_etl run {failed.run_id} (__ephemeral_asset_job__) failed\n"
        "step failing_load: ValueError: plex.factlineas: column Importe: MySQL value 1e70 does not convert",
        "plex_etl table quantio/orders is stale: its freshness policy failed (was WARN)",
    ]
    assert "0 alert(s) posted" in tick()  # nothing twice
    assert len(webhook) == 7


@dg.asset(check_specs=[dg.AssetCheckSpec("row_count_matches_mysql", asset="checked", blocking=True)])
def checked():
    yield dg.Output(1)
    yield dg.AssetCheckResult(check_name="row_count_matches_mysql", passed=False, description="3 rows, MySQL has 4")


def test_nothing_is_lost_or_doubled_while_the_webhook_is_down(instance, webhook, monkeypatch):
    tick = Ticks(instance)
    tick()
    result = dg.materialize([checked], instance=instance, raise_on_error=False)
    url = os.environ[ALERT_WEBHOOK_ENV]
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, down)
    with pytest.raises(OSError, match="Connection refused"):
        tick()  # nothing was posted: the tick fails (red in the UI) and keeps its cursor
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
    assert "2 alert(s) posted" in tick()
    texts = webhook
    assert len(texts) == 2 and "3 rows, MySQL has 4" in texts[0] and f"run {result.run_id}" in texts[1]
    assert "0 alert(s) posted" in tick()


def test_without_a_webhook_the_alerts_are_logged(instance, monkeypatch):
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    tick = Ticks(instance)
    tick()
    dg.materialize([checked], instance=instance, raise_on_error=False)
    assert "2 alert(s) logged" in tick()
    assert "0 alert(s)" in tick()


def test_the_code_location_runs_the_alert_sensor():
    from plex_etl.definitions import defs

    assert alerts_sensor in defs.sensors and alerts_sensor.name == ALERT_SENSOR
    assert alerts_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_small_batches_skip_nothing(instance):
    """Read a few events per tick (here one per stream), the streams interleaved: every event
    comes, once, in storage order."""
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    from plex_etl.defs.alerts import pending_events

    for i in range(2):
        dg.materialize([failing_load, checked], instance=instance, raise_on_error=False)
        dg.materialize([orders], instance=instance)
        instance.report_runless_asset_event(FreshnessStateChange(
            key=dg.AssetKey(f"t{i}"), new_state=FreshnessState.FAIL if i % 2 else FreshnessState.WARN,
            previous_state=FreshnessState.PASS, state_change_timestamp=time.time()))
    everything = [e.storage_id for e in pending_events(instance, 0)]
    assert len(everything) == 6
    seen, after = [], 0
    while batch := pending_events(instance, after, limit=1):
        seen += [e.storage_id for e in batch]
        after = batch[-1].storage_id
    assert seen == everything


def test_failures_reported_without_a_run_are_posted_once(instance, webhook, monkeypatch):
    """A configuration problem (its sensor reports it without a run) and a table whose change
    capture stopped (the worker reports it without a run) reach the webhook too: the run-based
    stream never carries them."""
    from dataclasses import replace

    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.cdc.report import TableReport
    from plex_etl.defs.cdc import DagsterReporter
    from plex_etl.defs.problems import Problem, problems_sensor
    from plex_etl.sources import get_source

    problem = Problem(dg.AssetKey(["plex", "ventas"]), "plex.plan.yaml, line 3: unknown key 'strategi'", "plex")
    sensor = problems_sensor([problem])
    result = sensor(dg.build_sensor_context(instance=instance))
    assert result.cursor and webhook == [
        "plex_etl: 1 configuration problem(s), not loaded:\n- plex/ventas: plex.plan.yaml, line 3: unknown key "
        "'strategi'"]
    again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason) and len(webhook) == 1  # the same problems: nothing new

    catalog, plan = load_source_catalog("plex")
    tables = {**plan.tables, "apppedidos": replace(plan.tables["apppedidos"], capture="binlog")}
    reporter = DagsterReporter(instance, get_source("plex"), catalog, replace(plan, tables=tables), {}, 300.0)
    try:
        stopped = TableReport("apppedidos", stopped="ALTER TABLE apppedidos in the binary log: run discover")
        for _ in range(2):
            events, _later = reporter.events(stopped)
            assert events[0].passed is False
    finally:
        reporter.close(1.0)
    assert len(webhook) == 2 and webhook[1].startswith("plex_etl: change capture of plex/apppedidos stopped (")
    assert webhook[1].endswith("ALTER TABLE apppedidos in the binary log: run discover")
