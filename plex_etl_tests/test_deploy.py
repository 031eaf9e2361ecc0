"""Production deployment: the PostgreSQL instance of deploy/dagster.yaml, pools, retries (alerts:
test_alerts.py).
(The Helm values, deploy/k8s and the README's steps: test_deploy_k8s.py; the rendered chart:
test_deploy_chart.py.)

The instance test needs the machine's PostgreSQL at 127.0.0.1:5432 (user postgres, trust
auth; `.ci/run` starts it); it creates and drops the database `<prefix>_instance`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from plex_etl.defs.pools import apply_pool_limits
from plex_etl.sources import load_sources
from plex_etl_tests.postgres import PG, instance_environment, scratch_postgres

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[str]:
    with scratch_postgres("instance") as name:
        yield name


@pytest.fixture
def production_instance(postgres_db, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """A DagsterInstance from deploy/dagster.yaml, unchanged, with its settings in the environment."""
    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    for name, value in instance_environment(postgres_db).items():
        monkeypatch.setenv(name, value)
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
