"""Production deployment: the PostgreSQL instance of deploy/dagster.yaml, pools, retries, alerts.
(The Helm values, deploy/k8s and the README's steps: test_deploy_k8s.py; the rendered chart:
test_deploy_chart.py.)

The instance test needs the machine's PostgreSQL at 127.0.0.1:5432 (user postgres, trust
auth; `.ci/run` starts it); it creates and drops the database `<prefix>_instance`.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from plex_etl.defs.alerts import (
    ALERT_WEBHOOK_ENV,
    ASSET_ALERT_SENSOR,
    RUN_FAILURE_SENSOR,
    check_and_freshness_alert,
    run_failure_alert,
)
from plex_etl.defs.pools import apply_pool_limits
from plex_etl.sources import load_sources

REPO = Path(__file__).resolve().parents[1]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    import psycopg2

    name = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_instance"
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:
        pytest.fail(
            f"PostgreSQL does not answer on {PG['host']}:{PG['port']} as {PG['user']} ({error}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (.ci/run does)"
        )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def production_instance(postgres_db, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """A DagsterInstance from deploy/dagster.yaml, unchanged, with its settings in the environment."""
    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    for name, value in {"HOST": PG["host"], "PORT": str(PG["port"]), "DB": postgres_db,
                        "USERNAME": PG["user"], "PASSWORD": ""}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


@dg.asset
def trivial() -> int:
    return 1


def test_production_instance_stores_runs_in_postgres(production_instance, postgres_db):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = production_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 43200
    assert instance.run_monitoring_start_timeout_seconds == 600
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 2
    assert concurrency.run_queue_config.max_concurrent_runs == 6
    assert [t["key"] for t in concurrency.run_queue_config.tag_concurrency_limits] == ["dagster/backfill"]

    result = dg.materialize([trivial], instance=instance)
    assert result.success
    # Read back through a second instance on the same database: the run really is in PostgreSQL.
    with dg.DagsterInstance.from_config(str(Path(instance.root_directory))) as other:
        run = other.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        assert other.get_latest_materialization_event(dg.AssetKey("trivial")) is not None
    import psycopg2

    with psycopg2.connect(dbname=postgres_db, **PG) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)


def test_pool_limits_from_sources_yaml(production_instance):
    sources = load_sources()
    applied = apply_pool_limits(production_instance, sources.values())
    assert applied == {f"mysql_{name}": s.pool_limit for name, s in sources.items()}
    assert applied == {"mysql_plex": 2, "mysql_quantio": 1}  # sources.yaml as committed
    for pool, limit in applied.items():
        assert production_instance.event_log_storage.get_concurrency_info(pool).slot_count == limit


def test_pools_command_sets_the_instance_of_dagster_home(tmp_path, monkeypatch, capsys):
    from plex_etl.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert main(["pools"]) == 0
    assert "pool mysql_plex: 2" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("mysql_plex").slot_count == 2
        assert instance.event_log_storage.get_concurrency_info("mysql_quantio").slot_count == 1


def test_every_table_asset_retries_with_backoff():
    from plex_etl.definitions import defs

    tables = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and "plex_etl/source" in
              next(iter(a.tags_by_key.values()))]
    assert len(tables) > 40
    for asset in tables:
        policy = asset.op.retry_policy
        assert policy == dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL), asset.key


def test_failure_sensor_is_registered():
    from plex_etl.definitions import defs

    assert run_failure_alert in defs.sensors and run_failure_alert.name == RUN_FAILURE_SENSOR
    assert check_and_freshness_alert in defs.sensors and check_and_freshness_alert.name == ASSET_ALERT_SENSOR


@dg.asset
def broken() -> None:
    raise RuntimeError("the MySQL server went away")


def _failure_context(instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR, dagster_instance=instance, dagster_run=run, dagster_event=failure
    ).for_run_failure()


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content_type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    _Webhook.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Webhook.received
    server.shutdown()
    server.server_close()


def test_run_failure_posts_to_the_webhook(webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
    with dg.instance_for_test() as instance:
        run_failure_alert(_failure_context(instance))
    assert len(received) == 1
    assert received[0]["content_type"] == "application/json"
    text = received[0]["body"]["text"]
    assert "failed" in text and "broken" in text


def test_run_failure_without_webhook_logs_and_posts_nothing(webhook, monkeypatch):
    _url, received = webhook
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    with dg.instance_for_test() as instance:
        run_failure_alert(_failure_context(instance))  # no exception
    assert received == []


def test_unreachable_webhook_fails_the_tick(monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"http://127.0.0.1:{port}/hook")
    with dg.instance_for_test() as instance, pytest.raises(OSError, match="Connection refused"):
        run_failure_alert(_failure_context(instance))


@dg.asset(
    check_specs=[
        dg.AssetCheckSpec("row_count_matches_mysql", asset="checked", blocking=True),
        dg.AssetCheckSpec("no_orphans_x", asset="checked"),
    ]
)
def checked():
    yield dg.Output(1)
    yield dg.AssetCheckResult(check_name="row_count_matches_mysql", passed=False, description="3 rows, MySQL has 4")
    yield dg.AssetCheckResult(check_name="no_orphans_x", passed=False, severity=dg.AssetCheckSeverity.WARN)


CHECKED = dg.Definitions(assets=[checked])


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> str:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=CHECKED)
    check_and_freshness_alert(context)
    assert context.cursor
    return context.cursor


def test_failed_blocking_check_and_stale_table_are_posted_once(webhook, monkeypatch):
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    url, received = webhook
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)

    def freshness(key: str, new: FreshnessState, old: FreshnessState) -> None:
        instance.report_runless_asset_event(
            FreshnessStateChange(key=dg.AssetKey(key), new_state=new, previous_state=old,
                                 state_change_timestamp=1.0)
        )

    with dg.instance_for_test() as instance:
        freshness("before_the_sensor", FreshnessState.FAIL, FreshnessState.PASS)
        cursor = _tick(instance, None)  # first tick: history is not posted
        assert received == []

        result = dg.materialize([checked], instance=instance, raise_on_error=False)
        assert not result.success  # the blocking check failed the run
        freshness("quantio/orders", FreshnessState.WARN, FreshnessState.PASS)  # not a failure
        freshness("quantio/orders", FreshnessState.FAIL, FreshnessState.WARN)
        freshness("quantio/orders", FreshnessState.PASS, FreshnessState.FAIL)  # recovery: not posted
        cursor = _tick(instance, cursor)
        texts = [r["body"]["text"] for r in received]
        assert all(r["content_type"] == "application/json" for r in received)
        assert len(texts) == 2, texts
        assert "blocking check row_count_matches_mysql failed on checked" in texts[0]
        assert "3 rows, MySQL has 4" in texts[0] and result.run_id in texts[0]
        assert "quantio/orders is stale" in texts[1] and "was WARN" in texts[1]

        _tick(instance, cursor)  # nothing new: nothing posted again
        assert len(received) == 2


def test_check_alert_not_lost_when_the_webhook_is_down(webhook, monkeypatch):
    import socket

    url, received = webhook
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None)
        dg.materialize([checked], instance=instance, raise_on_error=False)
        monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"http://127.0.0.1:{port}/hook")
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=CHECKED)
        with pytest.raises(OSError, match="Connection refused"):
            check_and_freshness_alert(context)
        monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
        _tick(instance, cursor)  # the tick that failed left the cursor where it was
        assert len(received) == 1 and "row_count_matches_mysql" in received[0]["body"]["text"]
