"""Every use of Dagster that its public API does not cover, in one place.

plex_etl otherwise uses only what Dagster documents as public (exported from `dagster` and, for
methods, marked public in its API reference). Each entry below says what it needs and why no
public API does it in Dagster 1.13; plex_etl_tests/test_dagster_private.py pins each one's
behaviour, so a Dagster upgrade that changes it fails that test rather than production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from plex_etl.status import CheckOutcome

# Run tags Dagster sets and exports no constant for (dagster._core.storage.tags): every run a
# declarative-automation tick launches, directly or through a backfill, carries
# AUTOMATION_RUN_TAG = "true"; every run of a backfill carries BACKFILL_RUN_TAG = its id. The
# whole-table reconciliation check tells by them a run its own condition requested (now and then
# with its table's load, when both are due in one tick) from a load that selects every check of
# its tables: the CLI, the UI's Materialize, any backfill's runs (defs/checks.py, rides_along).
AUTOMATION_RUN_TAG = "dagster/from_automation_condition"
BACKFILL_RUN_TAG = "dagster/backfill"

RUN_PAGE = 1000  # a run's events read per query


def run_event_records(instance: dg.DagsterInstance, run_id: str,
                      event_types: set[dg.DagsterEventType]) -> list[dg.EventLogRecord]:
    """A run's events of `event_types`, in the order they were stored (completion order).

    Why: the alerts read the check evaluations and step failures of each run that ended. Public
    APIs read materializations, observations and run status changes only (`fetch_*`); the run's
    own records come from `DagsterInstance.get_records_for_run` (the method behind the public
    `RunFailureSensorContext.get_step_failure_events`), not marked public."""
    records: list[dg.EventLogRecord] = []
    cursor = None
    while True:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=event_types, limit=RUN_PAGE)
        records.extend(page.records)
        if not page.has_more:
            return records
        cursor = page.cursor


def step_failure_text(event: dg.DagsterEvent) -> str:
    """The cause of a failed step in one or two lines: a `dg.Failure`'s description, else the
    innermost error the step raised ('ValueError: ...'), not Dagster's wrapper around it.

    Why: a STEP_FAILURE event carries a `StepFailureData` (error info, a Failure's description),
    which Dagster documents only through `event.event_specific_data.error` in the
    `RunFailureSensorContext.get_step_failure_events` example; its classes are not exported."""
    data = event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return user.description
    error = getattr(data, "error", None)
    if error is None:
        return event.message or "no error message"
    while error.cause is not None:
        error = error.cause
    return error.message.strip() or error.cls_name or "no error message"


@dataclass(frozen=True)
class FreshnessChange:
    storage_id: int
    asset_key: dg.AssetKey
    previous_state: str  # PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE
    new_state: str


def freshness_changes(instance: dg.DagsterInstance, after: int | None, limit: int) -> list[FreshnessChange]:
    """The freshness state changes stored after storage id `after` (None: only the latest one),
    oldest first.

    Why: the daemon records a table's freshness policy turning FAIL as a FRESHNESS_STATE_CHANGE
    event; no `fetch_*` method reads those (the instance's `get_event_records` is deprecated, so
    the event log storage's is used) and their payload class, `FreshnessStateChange`, is not
    exported."""
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=after),
        limit=limit if after is not None else 1, ascending=after is not None,
    )
    changes = []
    for record in records:
        event = record.event_log_entry.dagster_event
        change = event.event_specific_data if event else None
        if change is not None:
            changes.append(FreshnessChange(record.storage_id, change.key, change.previous_state.value,
                                           change.new_state.value))
    return changes


def set_pool_limit(instance: dg.DagsterInstance, pool: str, limit: int) -> None:
    """What `dagster instance concurrency set POOL LIMIT` does.

    Why: pool limits live in the instance's storage and Dagster offers the CLI command, not a
    public Python API (the event log storage's `set_concurrency_slots` is what the command calls)."""
    instance.event_log_storage.set_concurrency_slots(pool, limit)



def run_process_id(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that executes a run's steps (the in-process executor) or hands them out (the
    multiprocess executor), as Dagster recorded it when the run began executing; None before.

    Why: Dagster keeps a run's process id only in the metadata of that engine event ("Executing
    steps in process (pid: N)", "... parent process (pid: N)"); a run executed by the CLI has no
    run launcher to ask about its worker."""
    page = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=50)
    for record in page.records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        pid = (data.metadata or {}).get("pid") if data else None
        if pid is not None and (event.message or "").startswith("Executing steps"):
            return int(pid.value)
    return None


def instance_on_this_machine(instance: dg.DagsterInstance) -> bool:
    """Whether every process of the instance runs on this machine: its runs live in SQLite (or in
    memory), which no two machines share. Only there does a process id name a run's process.

    Why: the instance's storage classes are not exported."""
    from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage

    return isinstance(instance.run_storage, (SqliteRunStorage, InMemoryRunStorage))


def fail_run(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Mark a run that cannot report its end itself (its process is gone) as failed.

    Why: what a run launcher's health check and run monitoring do (`report_run_failed`); there is
    no public API for it."""
    instance.report_run_failed(run, message)


def free_run_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Free the pool slots a run holds and drop its steps waiting for one.

    Why: what run monitoring does `free_slots_after_run_end_seconds` after a run ended (the event
    log storage's `free_concurrency_slots_for_run`); without a daemon nothing else does."""
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def latest_check_outcomes(instance: dg.DagsterInstance,
                          keys: Iterable[dg.AssetCheckKey]) -> dict[dg.AssetCheckKey, CheckOutcome]:
    """The latest evaluation of each check that has one (a check planned in a run still going, or
    in a run that failed before it, keeps its previous evaluation), as the UI's Checks tab shows it.

    Why: the replication status (defs/status.py) reports failing checks and the last
    reconciliation of every table. Public APIs read materializations, observations and run
    records only (`fetch_*`, `get_run_records`); the checks' executions are indexed by the event
    log storage (`get_latest_asset_check_execution_by_key`, `get_asset_check_execution_history`,
    what the UI's GraphQL reads), and their `AssetCheckExecutionRecordStatus` is not exported."""
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )

    storage = instance.event_log_storage
    keys = list(keys)
    records = dict(storage.get_latest_asset_check_execution_by_key(keys)) if keys else {}
    for key, record in list(records.items()):
        if record.status not in COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES:
            done = storage.get_asset_check_execution_history(
                key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
            if done:
                records[key] = done[0]
            else:
                del records[key]
    outcomes = {}
    for key, record in records.items():
        event = record.event.dagster_event if record.event else None
        evaluation = event.asset_check_evaluation_data if event else None
        if evaluation is None:
            continue
        outcomes[key] = CheckOutcome(
            passed=evaluation.passed,
            severity=evaluation.severity.value,
            description=evaluation.description or "",
            metadata={name: value.value for name, value in evaluation.metadata.items()},
            at=dt.datetime.fromtimestamp(record.create_timestamp, dt.UTC),
        )
    return outcomes
