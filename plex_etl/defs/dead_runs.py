"""Runs whose process died: marked failed, their pool slots freed.

A run the daemon or the UI launches has a run launcher that notices when its worker dies (the
code server locally, Kubernetes in production); run monitoring then frees its pool slots
(`run_monitoring.free_slots_after_run_end_seconds`). A run that `dagster asset materialize` or
`plex-etl replicate` executes in its own process has no launcher: killed (SIGKILL, the OOM
killer, a closed terminal), it stays STARTED holding its `mysql_<source>` slots, and every later
run of that source waits for them for ever.

On an instance whose processes all run on this machine (the local SQLite instance), a STARTED
run whose process (the pid Dagster recorded when it began executing) no longer exists, or is a
newer process that reused the pid, is dead: it is marked failed, saying so, and its slots and
waiting steps are freed at once. Three places look: the sensor `plex_etl_dead_runs` (every 30 s
where a daemon runs: `make dev`, `dagster dev`), `plex-etl replicate` before each run and when it
stops its own, and `plex-etl pools`. On a shared instance (PostgreSQL) a process id says nothing
and run monitoring alone decides.
"""

from __future__ import annotations

import os
import time

import dagster as dg

from plex_etl.defs.dagster_private import (
    fail_run,
    free_run_slots,
    instance_on_this_machine,
    run_event_records,
    run_process_id,
)

DEAD_RUNS_SENSOR = "plex_etl_dead_runs"
DEAD_RUNS_INTERVAL_SECONDS = 30
PID_REUSE_SLACK_SECONDS = 5.0  # a process started this long after the run began is another one


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), where /proc tells (Linux); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_gone(pid: int, run_started: float | None) -> bool:
    """Whether the process that ran a run (started at `run_started`) no longer exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process of that pid: alive, or a reuse: the start time tells
        pass
    started = process_start_time(pid)
    return started is not None and run_started is not None and started > run_started + PID_REUSE_SLACK_SECONDS


def run_of_process(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun | None:
    """The STARTED run that process `pid` executes, if any."""
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run_process_id(instance, record.dagster_run.run_id) == pid:
            return record.dagster_run
    return None


STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED, dg.DagsterEventType.STEP_SUCCESS,
               dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}
STEP_RUNNING = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED}


def running_a_step(instance: dg.DagsterInstance, pid: int) -> bool:
    """Whether process `pid` executes a run with a step under way: a table's load may be reading
    MySQL or writing the warehouse, and must be let stop cleanly (it stops its read and its
    staging). A run waiting for a pool slot, or between two steps, has nothing in flight."""
    run = run_of_process(instance, pid)
    if run is None:
        return False
    last: dict[str, dg.DagsterEventType] = {}
    for record in run_event_records(instance, run.run_id, STEP_EVENTS):
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key:
            last[event.step_key] = event.event_type
    return any(kind in STEP_RUNNING for kind in last.values())


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail each STARTED run of this machine whose process is gone and free its slots; one line
    per run released."""
    if not instance_on_this_machine(instance):
        return []
    released = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        pid = run_process_id(instance, run.run_id)
        if pid is None or not process_gone(pid, record.start_time):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            continue  # it ended meanwhile, by itself
        fail_run(instance, run, f"the process that ran this run (pid {pid}) is gone: killed (SIGKILL, out of "
                                f"memory) without ending the run; marked failed, its pool slots freed")
        free_run_slots(instance, run.run_id)
        released.append(f"run {run.run_id} ({run.job_name}): process {pid} gone; failed, pool slots freed")
    return released


@dg.sensor(
    name=DEAD_RUNS_SENSOR,
    minimum_interval_seconds=DEAD_RUNS_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="On the local instance: fails runs whose process was killed (SIGKILL, out of memory) and frees "
    "their pool slots, so that later runs of the source do not wait for them for ever.",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    if not instance_on_this_machine(context.instance):
        return dg.SkipReason("a shared instance: run monitoring frees the slots of failed runs")
    started = time.monotonic()
    released = release_dead_runs(context.instance)
    for line in released:
        context.log.warning(line)
    return dg.SkipReason(f"{len(released)} dead run(s) released ({time.monotonic() - started:.1f} s)")
