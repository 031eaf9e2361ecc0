"""The production instance (deploy/dagster.yaml) on a real PostgreSQL with a real `dagster-daemon`.

One daemon serves the module: it loads the code location plex_etl_tests/daemon_location.py
(partitioned assets in quantio's pool `mysql_quantio`) and runs the backfill, queue,
run-monitoring and concurrency machinery. The instance is deploy/dagster.yaml with only its
timings shortened (MONITORING below); quantio's pool gets its sources.yaml `pool_limit` (1)
the way `plex-etl pools` sets it. Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust);
creates and drops the database `<prefix>_daemon`.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from plex_etl.defs.alerts import ALERT_SENSOR, ALERT_WEBHOOK_ENV
from plex_etl.defs.pools import apply_pool_limits
from plex_etl.sources import load_sources
from plex_etl_tests import daemon_location
from plex_etl_tests.postgres import instance_environment, scratch_postgres

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
# The test's copy of deploy/dagster.yaml differs only in these timings (seconds).
MONITORING = {"poll_interval_seconds": 1, "max_runtime_seconds": 40, "free_slots_after_run_end_seconds": 2,
              "start_timeout_seconds": 60, "cancel_timeout_seconds": 30}
DEQUEUE_SECONDS = 1
T = TypeVar("T")


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list[str]

    def do_POST(self) -> None:
        self.server.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, list[str]]]:
    """A local webhook receiver: (URL, texts received)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, webhook) -> Iterator[tuple[dg.DagsterInstance, Path]]:
    """(instance, step log directory) with `dagster-daemon run` running on that instance; the
    code location posts its alerts to `webhook`."""
    with scratch_postgres("daemon") as name:
        home = tmp_path_factory.mktemp("dagster_home")
        steps = tmp_path_factory.mktemp("steps")
        config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
        config["run_monitoring"].update(MONITORING)
        config["run_coordinator"]["config"] = {"dequeue_interval_seconds": DEQUEUE_SECONDS}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "plex_etl_tests.daemon_location", "working_directory": str(REPO),
            "location_name": "daemon_test"}}]}))
        env = {"DAGSTER_HOME": str(home), **instance_environment(name),
               "PLEX_ETL_DAEMON_TEST_DIR": str(steps), ALERT_WEBHOOK_ENV: webhook[0]}
        with pytest.MonkeyPatch.context() as monkeypatch:
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert instance.run_monitoring_max_runtime_seconds == MONITORING["max_runtime_seconds"]
                assert apply_pool_limits(instance, load_sources().values())["mysql_quantio"] == 1
                log = (home / "daemon.log").open("w")
                process = subprocess.Popen(
                    [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
                    cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
                try:
                    yield instance, steps
                finally:
                    _stop(process)
                    log.close()
                    if os.environ.get("PLEX_ETL_SHOW_DAEMON_LOG"):
                        print((home / "daemon.log").read_text()[-20000:])


def _stop(process: subprocess.Popen) -> None:
    """The daemon and everything it started (code server, run workers): its process group."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            if sig == signal.SIGTERM:
                time.sleep(1)  # children leave after the daemon; SIGKILL the group's rest
        except subprocess.TimeoutExpired:
            pass


def _wait(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _backfill(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, partitions: list[str] | None,
              tags: dict[str, str] | None = None) -> str:
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=daemon_location.defs.resolve_asset_graph(),
        partition_names=partitions, asset_selection=[asset.key], backfill_timestamp=time.time(),
        tags=tags or {}, dynamic_partitions_store=instance, all_partitions=partitions is None, title=None,
        description=None, run_config=None,
    ))
    return backfill_id


def _steps(directory: Path, asset: str) -> list[dict[str, Any]]:
    path = directory / "steps.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [s for s in map(json.loads, lines) if s["asset"] == asset]


def _runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id)))


def _blocked_by_pool(instance: dg.DagsterInstance, run_id: str) -> bool:
    return any("blocked by limit for pool mysql_quantio" in (e.message or "")
               for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT))


def _assert_never_overlap(instance: dg.DagsterInstance, steps: list[dict[str, Any]]) -> None:
    """No two steps overlap; a step that never ended (its run died) lasted until its run's end."""
    intervals = sorted((s["start"], s.get("end") or instance.get_run_record_by_id(s["run_id"]).end_time or float("inf"))
                       for s in steps)
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert end <= next_start, f"two extractions in pool mysql_quantio at once: {intervals}"


def test_every_quantio_table_asset_is_in_the_pool_the_tests_use():
    from plex_etl.definitions import defs

    quantio = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key.path[0] == "quantio"
               and a.op.pool is not None]
    assert quantio and {a.op.pool for a in quantio} == {daemon_location.POOL}


def test_backfill_completes_and_quantio_never_runs_two_extractions(daemon):
    instance, steps = daemon
    backfill_id = _backfill(instance, daemon_location.extraction, ["a", "b", "c"])
    backfill = _wait("the backfill to finish", lambda: (b := instance.get_backfill(backfill_id)) and
                     b.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING) and b, timeout=150)
    runs = _runs(instance, backfill_id)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, [r.status for r in runs])
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["a", "b", "c"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert all(r.tags.get("dagster/backfill") == backfill_id for r in runs)  # queued as backfill runs
    done = _steps(steps, "extraction")
    assert sorted(s["partition"] for s in done) == ["a", "b", "c"]
    _assert_never_overlap(instance, done)
    # The queue let two backfill runs start together: the pool, not the queue, kept them apart.
    starts = sorted(instance.get_run_record_by_id(r.run_id).start_time for r in runs)
    if starts[1] - starts[0] < daemon_location.STEP_SECONDS:
        assert any(_blocked_by_pool(instance, r.run_id) for r in runs)


def _hang(instance: dg.DagsterInstance, steps: Path, partition: str, tags: dict[str, str] | None = None
          ) -> tuple[str, dict[str, Any], dg.DagsterRun]:
    """Backfills `partition` of `stuck`; returns (backfill id, its hanging step, its run)."""
    backfill_id = _backfill(instance, daemon_location.stuck, [partition], tags)
    hung = _wait(f"the step of {partition} to start", lambda: next(
        (s for s in _steps(steps, "stuck") if s["partition"] == partition and "end" not in s), None), timeout=90)
    run = instance.get_run_by_id(hung["run_id"])
    assert run.status == dg.DagsterRunStatus.STARTED and run.tags["dagster/backfill"] == backfill_id
    assert run.run_id in instance.event_log_storage.get_concurrency_info("mysql_quantio").active_run_ids
    return backfill_id, hung, run


def _queue_behind(instance: dg.DagsterInstance, steps: Path, holder: dg.DagsterRun, partition: str) -> dg.DagsterRun:
    """Backfills `partition` of `stuck` and shows it waits while `holder` holds the pool's slot. The
    backfill daemon submits it within ~30 s; the queue holds it (the queue counts pool slots) or,
    once launched, its step is blocked by the pool."""
    backfill_id = _backfill(instance, daemon_location.stuck, [partition], tags={"dagster/max_runtime": "180"})
    run = _wait(f"the run of {partition} to be queued", lambda: next(iter(_runs(instance, backfill_id)), None),
                timeout=40)
    time.sleep(2 * DEQUEUE_SECONDS + 1)
    assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.STARTED, "max runtime too short"
    waiting = instance.get_run_by_id(run.run_id)
    assert waiting.status == dg.DagsterRunStatus.QUEUED or _blocked_by_pool(instance, run.run_id), waiting.status
    assert not [s for s in _steps(steps, "stuck") if s["partition"] == partition]
    return run


SLACK = 10 * MONITORING["poll_interval_seconds"] + 5  # seconds; a loaded 2-core machine


def _slot_freed_then_next_runs(instance: dg.DagsterInstance, steps: Path, dead: dg.DagsterRun,
                               following: dg.DagsterRun) -> None:
    failed_at = instance.get_run_record_by_id(dead.run_id).end_time
    _wait("the dead run's pool slot to be freed", lambda: dead.run_id not in
          instance.event_log_storage.get_concurrency_info("mysql_quantio").active_run_ids,
          timeout=MONITORING["free_slots_after_run_end_seconds"] + SLACK)
    assert time.time() - failed_at <= MONITORING["free_slots_after_run_end_seconds"] + SLACK
    _wait("the next run to succeed", lambda: instance.get_run_by_id(following.run_id).status
          == dg.DagsterRunStatus.SUCCESS, timeout=60)
    [step] = [s for s in _steps(steps, "stuck") if s["run_id"] == following.run_id]
    assert step["start"] >= failed_at  # it got the slot only after the dead run's end


def test_killed_run_is_failed_and_its_pool_slot_freed(daemon):
    instance, steps = daemon
    # Its own max runtime is long: here the run dies, it is not stopped for its runtime.
    backfill_id, hung, killed = _hang(instance, steps, "killed", tags={"dagster/max_runtime": "180"})
    following = _queue_behind(instance, steps, killed, "next")

    os.kill(hung["pid"], signal.SIGKILL)  # the run worker (in-process executor): it writes no event
    killed_at = time.time()
    # With the default run launcher the code server sees its run worker die; on Kubernetes run
    # monitoring's worker health check does, every poll_interval_seconds.
    _wait("the killed run to be marked failed", lambda: instance.get_run_by_id(killed.run_id).status
          == dg.DagsterRunStatus.FAILURE, timeout=SLACK)
    assert instance.get_run_record_by_id(killed.run_id).end_time - killed_at <= SLACK
    messages = [e.message for e in instance.all_logs(killed.run_id) if e.message]
    assert any("terminated by signal 9 (SIGKILL)" in m for m in messages), messages[-5:]
    _slot_freed_then_next_runs(instance, steps, killed, following)
    # The killed run is retried once whole (run_retries); the retry takes the pool in its turn.
    _wait("the retry of the killed run to finish", lambda: [
        r for r in _runs(instance, backfill_id) if r.tags.get("dagster/retry_number") == "1"
        and r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)], timeout=60)
    _assert_never_overlap(instance, _steps(steps, "stuck"))


def test_stuck_run_stops_at_max_runtime_and_frees_the_pool(daemon):
    """Issue 11, point 6: a run that hangs holds its pool no longer than the max runtime."""
    instance, steps = daemon
    _backfill_id, _hung, stuck = _hang(instance, steps, "hung")
    following = _queue_behind(instance, steps, stuck, "after")

    start = instance.get_run_record_by_id(stuck.run_id).start_time
    limit = MONITORING["max_runtime_seconds"]
    _wait("the stuck run to be stopped", lambda: instance.get_run_by_id(stuck.run_id).status
          == dg.DagsterRunStatus.FAILURE, timeout=max(1, start + limit + SLACK - time.time()))
    stopped_after = instance.get_run_record_by_id(stuck.run_id).end_time - start
    assert limit <= stopped_after <= limit + SLACK
    messages = [e.message for e in instance.all_logs(stuck.run_id) if e.message]
    assert any(f"maximum runtime of {limit} seconds" in m for m in messages), messages[-5:]
    _slot_freed_then_next_runs(instance, steps, stuck, following)
    _assert_never_overlap(instance, [s for s in _steps(steps, "stuck") if s["partition"] in ("hung", "after")])


def test_daemon_posts_failed_check_failed_run_and_stale_table_once(daemon, webhook):
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    instance, _steps_dir = daemon
    _url, received = webhook
    _wait("the alert sensor's first tick", lambda: any(
        s.name == ALERT_SENSOR and s.instigator_data and s.instigator_data.cursor
        for s in instance.all_instigator_state()), timeout=60)
    received.clear()
    backfill_id = _backfill(instance, daemon_location.checked, None)
    run = _wait("the run of the failing check", lambda: next(
        (r for r in _runs(instance, backfill_id) if r.status == dg.DagsterRunStatus.FAILURE), None), timeout=90)
    instance.report_runless_asset_event(FreshnessStateChange(
        key=dg.AssetKey("extraction"), new_state=FreshnessState.FAIL, previous_state=FreshnessState.PASS,
        state_change_timestamp=time.time()))

    def ours() -> list[str]:  # the earlier tests' failed runs are posted too, at their sensor's pace
        return [t for t in received if run.run_id in t or "extraction is stale" in t]

    _wait("three alerts", lambda: len(ours()) >= 3, timeout=60)
    time.sleep(6)  # a few more ticks: nothing is posted twice
    mine = ours()
    assert len(mine) == 3, mine
    check, failure = mine[:2]  # the run's check, then the run, in the order they completed
    assert check.startswith("plex_etl blocking check row_count_matches_mysql failed on checked")
    assert "3 rows, MySQL has 4" in check
    assert failure.startswith(f"plex_etl run {run.run_id}") and "Steps failed" not in failure
    assert "blocking check failed: row_count_matches_mysql on checked (its alert above has the cause)" in failure
    assert "extraction is stale" in mine[2]
