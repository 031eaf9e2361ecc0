"""The local instance (the repository's dagster.yaml on Dagster's stock SQLite storage) with a real
`dagster-daemon`: runs that `dagster asset materialize` executes and that are SIGKILLed while they
hold `mysql_plex` slots are failed and their slots freed, so a later run gets them; and a run that
waits for a slot stops at once when `plex-etl replicate` (Dagster's in-process executor, which
ignores SIGTERM while it waits) is told to stop. The code location is plex_etl_tests/pool_location.py
(one asset in `mysql_plex` that holds its slot while a file exists, and the dead-runs sensor).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import yaml

from plex_etl.defs.dagster_private import set_pool_limit
from plex_etl.defs.dead_runs import DEAD_RUNS_INTERVAL_SECONDS

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")
MATERIALIZE = [DAGSTER, "asset", "materialize", "-m", "plex_etl_tests.pool_location", "--select", "extraction"]
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def local(tmp_path) -> Iterator[tuple[dg.DagsterInstance, dict[str, str]]]:
    """(instance, environment of its processes) with `dagster-daemon run` serving it."""
    home = tmp_path / "home"
    home.mkdir()
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(home)}}  # Dagster's own storage, as the lead's change
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "plex_etl_tests.pool_location", "working_directory": str(REPO)}}]}))
    env = dict(os.environ, DAGSTER_HOME=str(home), PYTHONPATH=str(REPO), PLEX_ETL_TEST_HOLD_FILE=str(tmp_path / "hold"))
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(home / "workspace.yaml")], cwd=home, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            set_pool_limit(instance, "mysql_plex", 2)
            yield instance, env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(daemon.pid, sig)
                daemon.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        log.close()


def start(env: dict[str, str], hold: Path | None, *extra: str) -> subprocess.Popen:
    """`dagster asset materialize` of the asset, in a process group of its own; its step holds
    the slot while `hold` exists (None: not at all)."""
    env = {**env, "PLEX_ETL_TEST_HOLD_FILE": str(hold) if hold else "/nonexistent/plexetl_hold"}
    return subprocess.Popen([*MATERIALIZE, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def holding(instance: dg.DagsterInstance, n: int) -> set[str] | None:
    """The runs holding a mysql_plex slot, once there are `n` (the pool page of the UI reads the same)."""
    runs = instance.event_log_storage.get_concurrency_info("mysql_plex").active_run_ids
    return runs if len(runs) == n else None


def blocked_run(instance: dg.DagsterInstance, others: set[str]) -> dg.DagsterRun | None:
    for record in instance.get_run_records():
        run = record.dagster_run
        if run.run_id not in others and any(
            "blocked by limit for pool mysql_plex" in (e.message or "")
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        ):
            return run
    return None


def test_killed_runs_free_their_slots_and_a_waiting_run_stops_at_once(local, tmp_path):
    instance, env = local
    hold = tmp_path / "hold"
    hold.touch()

    # 1. Two runs hold both slots of mysql_plex; both are SIGKILLed (the executor and its step).
    first = [start(env, hold), start(env, hold)]
    killed = wait_for("two runs to hold both slots", lambda: holding(instance, 2), timeout=180)
    third = start(env, None)
    wait_for("the third run to wait for a slot", lambda: blocked_run(instance, killed), timeout=120)
    for process in first:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed_at = time.time()
    # The daemon's plex_etl_dead_runs sensor finds the killed processes gone: the runs fail, their
    # slots are freed, the third run gets one and succeeds.
    assert third.wait(timeout=2 * DEAD_RUNS_INTERVAL_SECONDS + 90) == 0
    for run_id in killed:
        record = instance.get_run_record_by_id(run_id)
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        assert record.end_time - killed_at <= 2 * DEAD_RUNS_INTERVAL_SECONDS + 30
        messages = [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
        assert any("is gone: killed" in (m or "") for m in messages), messages

    # 2. Both slots held again; `plex-etl replicate`'s runner (in-process executor) waits for one
    # and is told to stop: it stops at once (exit 128 + SIGTERM), and its run is failed.
    holders = [start(env, hold), start(env, hold)]
    wait_for("two runs to hold both slots again", lambda: holding(instance, 2), timeout=180)
    earlier = {r.dagster_run.run_id for r in instance.get_run_records()}
    base = [DAGSTER, "asset", "materialize", "-m", "plex_etl_tests.pool_location", "--config-json", IN_PROCESS]
    runner = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from plex_etl.cli import _materialize; "
                               f"sys.exit(_materialize({base!r}, ['--select', 'extraction']))"],
        env={**env, "PLEX_ETL_TEST_HOLD_FILE": "/nonexistent/plexetl_hold"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    waiting = wait_for("the replicate run to wait for a slot", lambda: blocked_run(instance, earlier),
                       timeout=120)
    stopped_at = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    _out, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert time.monotonic() - stopped_at < 15, "the waiting run was not stopped at once"
    assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.FAILURE
    assert f"run {waiting.run_id}" in err  # released, and said so
    hold.unlink()
    for process in holders:
        assert process.wait(timeout=120) == 0
