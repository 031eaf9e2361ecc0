"""Production deployment: the PostgreSQL instance of deploy/, pools, retries, Helm values (alerts: test_alerts.py).

The instance test needs the machine's PostgreSQL at 127.0.0.1:5432 (user postgres, trust
auth; `.ci/run` starts it); it creates and drops the database `<prefix>_instance`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

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


def test_helm_values_match_the_code():
    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    sources = yaml.safe_load((REPO / "plex_etl" / "config" / "sources.yaml").read_text())["sources"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["port"] == 4000
    assert deployment["codeServerArgs"] == ["-m", "plex_etl.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # Every MySQL password variable that sources.yaml reads comes from the Kubernetes secret.
    password_envs = {s["password"]["env"] for s in sources.values() if "env" in s.get("password", {})}
    secret = (REPO / "deploy" / "helm" / "secrets.example.yaml").read_text()
    assert password_envs <= set(re.findall(r"^\s+(\w+):", secret, re.MULTILINE))
    assert {"name": "plex-etl-mysql"} in deployment["envSecrets"]
    assert {"name": "plex-etl-mysql"} in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]


# The storage part of the dagster.yaml the Helm chart renders (templates/configmap-instance.yaml of
# the `dagster` chart): the three dagster-postgres storages named by the chart itself, the
# connection from `postgresql`; `additionalInstanceConfig` is appended after it.
CHART_STORAGE = """
schedule_storage: {module: dagster_postgres.schedule_storage, class: PostgresScheduleStorage, config: PG}
run_storage: {module: dagster_postgres.run_storage, class: PostgresRunStorage, config: PG}
event_log_storage: {module: dagster_postgres.event_log, class: PostgresEventLogStorage, config: PG}
"""


def test_helm_instance_uses_the_batched_event_log_storage(postgres_db, tmp_path, monkeypatch):
    from dagster_postgres import PostgresRunStorage

    from plex_etl.instance_storage import BatchedPostgresEventLogStorage

    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    extra = values["additionalInstanceConfig"]
    storage = extra["event_log_storage"]
    assert (storage["module"], storage["class"]) == ("plex_etl.instance_storage", "BatchedPostgresEventLogStorage")
    chart_pg = values["postgresql"]
    assert storage["config"]["postgres_db"] == {
        "hostname": chart_pg["postgresqlHost"], "port": chart_pg["service"]["port"],
        "db_name": chart_pg["postgresqlDatabase"], "username": chart_pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"}, "scheme": chart_pg["postgresqlScheme"]}
    # Every image that loads the instance can import plex_etl: the code server's.
    code_image = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert values["dagsterWebserver"]["image"] == values["dagsterDaemon"]["image"] == code_image

    # The rendered file, pointed at the test database: the appended key replaces the chart's.
    local = {"postgres_db": {"hostname": PG["host"], "port": PG["port"], "db_name": postgres_db,
                             "username": PG["user"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                             "scheme": "postgresql+psycopg2"}}
    storage["config"] = local
    rendered = (CHART_STORAGE.replace("PG", json.dumps(local)) + "telemetry: {enabled: false}\n"
                + yaml.safe_dump(extra, sort_keys=False))
    assert rendered.count("event_log_storage:") == 2
    (tmp_path / "dagster.yaml").write_text(rendered)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.event_log_storage) is BatchedPostgresEventLogStorage
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert int(os.environ["DAGSTER_EVENT_BATCH_SIZE"]) > 0  # the storage alone turns batching on
        assert dg.materialize([trivial], instance=instance).success


def test_dockerfile_lets_kubernetes_set_the_command():
    dockerfile = (REPO / "Dockerfile").read_text()
    entrypoints = re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE)
    # Only tini, which execs the container args (Helm and the K8s run launcher set only args).
    assert entrypoints == ['["/usr/bin/tini", "--"]']
    assert re.search(r"^CMD \[\"dagster\", \"code-server\", \"start\"", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "requirements-deploy.lock" in dockerfile
