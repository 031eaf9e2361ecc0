"""No leftovers: staging that a killed load left behind is removed (issue 16)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plex_etl.warehouse import LocalWarehouse
from plex_etl.warehouse.local import STALE_STAGING_AGE, remove_stale_staging
from plex_etl_tests import warehouse_scenarios as sc
from plex_etl_tests.bq_emulator import bigquery_emulator  # noqa: F401
from plex_etl_tests.bq_emulator import warehouse as emulator_warehouse

REPO = Path(__file__).resolve().parents[1]

# A load whose stream yields one chunk and then blocks: killed there, like a step whose
# process got SIGKILL (OOM killer, deploy) before the commit.
STUCK_LOAD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from plex_etl.warehouse import LocalWarehouse
    from plex_etl_tests import warehouse_scenarios as sc

    class H:
        dataset = "plex_analytics"

    t = sc.simple_target(H, "stuck")
    def batches():
        yield sc.batch(t, sc.D1, sc.people([1, 2]))
        print("staged", flush=True)
        time.sleep(60)
    LocalWarehouse(Path(sys.argv[1]) / "w.duckdb", staging_dir=Path(sys.argv[2])).load(t, batches(), sc.D1, sc.D1)
""")


def killed_load(tmp_path: Path, staging: Path) -> Path:
    child = subprocess.Popen(
        [sys.executable, "-c", STUCK_LOAD, str(tmp_path), str(staging)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "staged"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    (folder,) = staging.iterdir()
    assert folder.name.startswith("plex_etl_plex_analytics_stuck_") and (folder / "stage.parquet").exists()
    return folder


def test_a_local_load_removes_the_staging_a_killed_load_left(tmp_path: Path):
    staging = tmp_path / "staging"
    staging.mkdir()
    killed = killed_load(tmp_path, staging)
    # A load running in another (live) process right now: its folder stays.
    running = staging / "plex_etl_plex_analytics_busy_abc"
    running.mkdir()
    (running / "owner").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    # Left by a version that wrote no owner file, unchanged for longer than the limit: removed.
    old = staging / "plex_etl_plex_analytics_old_xyz"
    old.mkdir()
    (old / "stage.parquet").write_bytes(b"PAR1")
    hours_ago = time.time() - STALE_STAGING_AGE.total_seconds() - 3600
    for path in (old / "stage.parquet", old):
        os.utime(path, (hours_ago, hours_ago))
    # Someone else's folder that happens to share the prefix: never touched.
    foreign = staging / "plex_etl_notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    os.utime(foreign, (hours_ago, hours_ago))

    wh = LocalWarehouse(tmp_path / "w.duckdb", staging_dir=staging)

    class H:
        dataset = "plex_analytics"

    t = sc.simple_target(H, "fresh")
    wh.load(t, [sc.batch(t, sc.D1, sc.people([1]))], sc.D1, sc.D1)
    assert sorted(p.name for p in staging.iterdir()) == sorted([running.name, foreign.name])
    assert not killed.exists() and not old.exists()
    assert remove_stale_staging(staging) == []


def test_local_cleanup_by_age_alone(tmp_path: Path):
    folder = tmp_path / "plex_etl_plex_analytics_t_1"
    folder.mkdir()
    assert remove_stale_staging(tmp_path) == []
    assert remove_stale_staging(tmp_path, max_age=dt.timedelta(0)) == [folder]


def test_bigquery_stale_staging_tables_are_dropped(bigquery_emulator):  # noqa: F811
    from google.cloud import bigquery

    wh = emulator_warehouse(bigquery_emulator)
    dataset = "plex_cleanup"
    wh._ensure_dataset(dataset)
    names = ["ventas", "ventas__staging_0a1b2c3d", "stock__staging_deadbeef"]
    for name in names:
        wh.client.create_table(
            bigquery.Table(wh._table_id(dataset, name), schema=[bigquery.SchemaField("id", "INT64")]),
            exists_ok=True,
        )
    assert wh.drop_stale_staging_tables(dataset, older_than=dt.timedelta(hours=1)) == []
    dropped = wh.drop_stale_staging_tables(dataset, older_than=dt.timedelta(0))
    assert sorted(dropped) == ["stock__staging_deadbeef", "ventas__staging_0a1b2c3d"]
    assert [t.table_id for t in wh.client.list_tables(f"{wh.project}.{dataset}")] == ["ventas"]
    assert wh.drop_stale_staging_tables("plex_no_such_dataset") == []


class SlowJob:
    """A job that finishes after `seconds` (the polling contract of google-cloud-bigquery jobs)."""

    job_id = "job_slow"

    def __init__(self, seconds: float) -> None:
        self.done_at = time.monotonic() + seconds
        self.cancelled = False

    def result(self, retry=None, timeout=None):
        remaining = self.done_at - time.monotonic()
        if remaining > timeout:
            time.sleep(timeout)
            raise TimeoutError("Operation did not complete within the designated timeout.")
        time.sleep(max(remaining, 0))

    def cancel(self, **_: object) -> None:
        self.cancelled = True


def test_waiting_for_a_bigquery_job_logs_and_gives_up(caplog):
    from plex_etl.warehouse.base import WarehouseError
    from plex_etl.warehouse.bigquery import wait_for_job

    caplog.set_level(logging.INFO, logger="plex_etl.waits")
    wait_for_job(SlowJob(0.35), "ds.ventas: merge", timeout=5, poll=0.1)
    waits = [r.getMessage() for r in caplog.records if "waiting for BigQuery job job_slow" in r.getMessage()]
    assert len(waits) >= 2 and waits[0].startswith("ds.ventas: merge")
    job = SlowJob(10)
    started = time.monotonic()
    with pytest.raises(WarehouseError, match=r"ds\.ventas: merge: BigQuery job job_slow not finished after"):
        wait_for_job(job, "ds.ventas: merge", timeout=0.3, poll=0.1)
    assert job.cancelled and time.monotonic() - started < 1


def test_cleanup_command_on_the_local_warehouse(tmp_path: Path, monkeypatch, capsys):
    from plex_etl.cli import main

    stale = tmp_path / "plex_etl_plex_analytics_t_1"
    stale.mkdir()
    hours_ago = time.time() - 7 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(tmp_path / "w.duckdb"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(["cleanup"]) == 0
    assert not stale.exists()
    assert str(stale) in capsys.readouterr().out
