"""Retries only for transient failures, through real Dagster runs of the real table assets (their
RetryPolicy: two retries, after 30 s then 90 s). A deterministic failure (a refused password, a
reversed partition range, a full staging disk, a value the type map cannot convert) fails its
step once, at once, with its message; a transient one (MySQL unreachable) is retried. A table
whose value cannot be converted leaves no table behind and stops neither the other tables' loads
and checks in its run nor the source's reconciliation. BigQuery's own case (a value BIGNUMERIC
cannot hold) runs in test_replication_bigquery.py with the same scenario.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from plex_etl.defs.checks import RECONCILE_CHECK
from plex_etl.warehouse.base import Warehouse
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import build_defs, materialize
from plex_etl_tests.test_schema_evolution import SOURCE, scratch_source

DAY = dt.date.today() - dt.timedelta(days=10)  # inside the rolling window of daily partitions
HEALTHY, BROKEN = "ventas", "marcas"
REQUEST_TIMEOUT = 30.0


def attempts(result: dg.ExecuteInProcessResult, step: str) -> tuple[int, list[str]]:
    """(how many times `step` ran, the messages of its failures)."""
    events = [e for e in result.all_events if e.step_key == step]
    retried = [e for e in events if e.event_type_value in ("STEP_UP_FOR_RETRY", "STEP_RESTARTED")]
    failures = [e.event_specific_data.error.to_string() for e in events if e.event_type_value == "STEP_FAILURE"]
    return 1 + len([e for e in retried if e.event_type_value == "STEP_RESTARTED"]), failures


def step(table: str) -> str:
    return f"{SOURCE}__{table}"


def scenario_a_conversion_error_stays_with_its_table(warehouse: Warehouse, monkeypatch, tmp_path,
                                                    extra_broken: dict[str, str] | None = None) -> None:
    """`marcas.Activo` is discovered as a boolean (0/1), then holds a 2: its load fails once, at
    once, naming table, column and value, and leaves no table; `ventas` in the same run loads and
    passes its checks; the source's reconciliation judges both. `extra_broken`: more tables
    ({name: CREATE + INSERT statements}) that must fail the same way (e.g. a value BigQuery cannot
    hold), with the text their failure must show."""
    dataset = f"failures_{warehouse.kind}"
    monkeypatch.setenv("PLEX_ETL_DATASET", dataset)
    statements = [
        f"CREATE TABLE {HEALTHY} (IdVenta INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, Importe DECIMAL(12,2))",
        f"INSERT INTO {HEALTHY} VALUES (1, '{DAY} 09:00:00', 10.50), (2, '{DAY} 18:30:00', 20.25)",
        f"CREATE TABLE {BROKEN} (IdMarca INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, Activo TINYINT(1))",
        f"INSERT INTO {BROKEN} VALUES " + ", ".join(f"({i}, '{DAY} 10:00:00', {i % 2})" for i in range(1, 41)),
    ]
    for create_and_insert in (extra_broken or {}).values():
        statements += create_and_insert.split(";\n")
    scratch = scratch_source(monkeypatch, tmp_path, f"failures_{warehouse.kind}", *statements)
    plan = (scratch.config / f"{SOURCE}.plan.yaml").read_text()
    assert "bool" in plan  # discovery proposed the boolean from the sampled 0/1
    scratch.execute(f"INSERT INTO {BROKEN} VALUES (41, '{DAY} 11:00:00', 2)")

    defs = build_defs(request_timeout_seconds=REQUEST_TIMEOUT)
    tables = [HEALTHY, BROKEN, *(extra_broken or {})]
    result = materialize(defs, [f"{SOURCE}/{t}" for t in tables], DAY, raise_on_error=False)
    assert not result.success
    runs, failures = attempts(result, step(BROKEN))
    assert runs == 1 and len(failures) == 1, failures
    assert all(word in failures[0] for word in (BROKEN, "Activo", "2", "not retried")), failures[0]
    assert warehouse.columns(dataset, f"{SOURCE}_{BROKEN}") is None  # no empty table left behind
    for table in extra_broken or {}:
        runs, failures = attempts(result, step(table))
        assert runs == 1 and len(failures) == 1 and table in failures[0], failures
        assert warehouse.columns(dataset, f"{SOURCE}_{table}") is None

    assert result.asset_materializations_for_node(step(HEALTHY))
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {(HEALTHY, "schema_matches_catalog"): True, (HEALTHY, "row_count_matches_mysql"): True}

    reconciled = defs.resolve_job_def(f"{SOURCE}_reconciliation").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    verdicts = {e.asset_key.path[-1]: (e.passed, e.description) for e in reconciled.get_asset_check_evaluations()
                if e.check_name == RECONCILE_CHECK}
    assert set(verdicts) == set(tables)
    assert verdicts[HEALTHY][0] is True
    assert verdicts[BROKEN][0] is False and "41" in verdicts[BROKEN][1]  # 41 rows in MySQL, none landed
    scratch.drop()


@pytest.fixture
def local_warehouse(monkeypatch, tmp_path) -> LocalWarehouse:
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    monkeypatch.delenv("PLEX_ETL_BIGQUERY_ENDPOINT", raising=False)
    return LocalWarehouse(path)


def test_a_conversion_error_fails_once_and_stays_with_its_table(local_warehouse, monkeypatch, tmp_path):
    scenario_a_conversion_error_stays_with_its_table(local_warehouse, monkeypatch, tmp_path)


@pytest.fixture
def healthy_scratch(local_warehouse, monkeypatch, tmp_path):
    monkeypatch.setenv("PLEX_ETL_DATASET", "failures_kinds")
    scratch = scratch_source(
        monkeypatch, tmp_path, "failures_kinds",
        f"CREATE TABLE {HEALTHY} (IdVenta INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, Importe DECIMAL(12,2))",
        f"INSERT INTO {HEALTHY} VALUES (1, '{DAY} 09:00:00', 10.50), (2, '{DAY + dt.timedelta(days=1)} 08:00:00', 1)",
    )
    yield scratch
    scratch.drop()


def fails_once(start: dt.date, end: dt.date | None = None) -> str:
    """Materialize `ventas` over [start, end]: it must fail in one attempt; its message."""
    result = materialize(build_defs(), [f"{SOURCE}/{HEALTHY}"], start, end, raise_on_error=False)
    runs, failures = attempts(result, step(HEALTHY))
    assert not result.success and runs == 1 and len(failures) == 1, failures
    return failures[0]


def test_a_refused_password_is_not_retried(healthy_scratch):
    with pytest.MonkeyPatch.context() as wrong:
        wrong.setenv("PLEX_MYSQL_PASSWORD", "not-the-password")  # the scratch source's variable
        message = fails_once(DAY)
    assert "Access denied" in message and "not-the-password" not in message


def test_a_reversed_partition_range_is_not_retried(healthy_scratch):
    message = fails_once(DAY + dt.timedelta(days=1), DAY)
    assert f"start {DAY + dt.timedelta(days=1)} is after end {DAY}" in message


@pytest.fixture
def full_staging_disk(monkeypatch):
    """The system temp directory (where loads spool) on a filesystem with no space left: a 4 KiB
    tmpfs filled up. Mounting needs root; elsewhere this case is skipped."""
    mount = Path(tempfile.mkdtemp(prefix="plexetl_full_disk_"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        with (mount / "filler").open("wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 1024)
            except OSError:  # full
                pass
        monkeypatch.setattr(tempfile, "tempdir", str(mount))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def test_a_full_staging_disk_is_not_retried(healthy_scratch, full_staging_disk):
    message = fails_once(DAY)
    assert "No space left on device" in message


def test_an_unreachable_mysql_is_retried(tmp_path, demo_end_date):
    """Through the real CLI: a refused connection is transient, the step asks for its retry (the
    first after 30 s); the test stops the run once it has asked (SIGTERM, honoured at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    day = demo_end_date.isoformat()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path), PLEX_MYSQL_PORT=str(port), PLEX_ETL_WAREHOUSE="local",
               PLEX_ETL_LOCAL_WAREHOUSE=str(tmp_path / "warehouse.duckdb"))
    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "plex_etl.definitions",
               "--select", "plex/pedidos", "--partition", day]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            deadline = time.monotonic() + 180
            retry = None
            while retry is None and time.monotonic() < deadline and child.poll() is None:
                time.sleep(1)
                for record in instance.get_run_records():
                    events = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
                    retry = events[0] if events else None
            assert retry is not None, "the step did not ask for a retry"
            assert "retry in 30 seconds" in retry.message
            error = retry.dagster_event.event_specific_data.error.to_string()
            assert "Can't connect" in error and str(port) in error
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) != 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
