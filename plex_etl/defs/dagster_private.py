"""Every use of Dagster that its public API does not cover, in one place.

plex_etl otherwise uses only what Dagster documents as public (exported from `dagster` and, for
methods, marked public in its API reference). Each entry says what it needs and why no public API
does it in Dagster 1.13; plex_etl_tests/test_dagster_private.py pins each one's behaviour, so a
Dagster upgrade that changes it fails that test rather than production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import dagster as dg

from plex_etl.status import CheckOutcome


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
