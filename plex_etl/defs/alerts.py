"""Alerts posted to a webhook: every failed run, every failed blocking (or error-severity)
asset check, every table whose freshness policy turns FAIL.

`PLEX_ETL_ALERT_WEBHOOK` is the URL of an incoming webhook (Slack, Google Chat, Mattermost,
...); the message goes as JSON `{"text": ...}`, which all of them accept. When the variable
is unset the sensor logs the failure and posts nothing. A webhook that cannot be reached
fails the sensor tick (shown in the UI under the sensor), so a lost alert is visible.

Two sensors: `plex_etl_run_failure_alert` (Dagster's run-failure sensor) and
`plex_etl_check_and_freshness_alert`, which reads the instance's event log after a cursor
(the id of the last check execution of this code location's checks and the storage id of
the last `FRESHNESS_STATE_CHANGE` event it has seen), so each failure is posted once.
Freshness states are written by the daemon's freshness evaluation (on by default; instance
setting `freshness.enabled`) from each table's `FreshnessPolicy`. Its first tick only
records where the event log stands: failures from before the sensor ever ran are not posted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

ALERT_WEBHOOK_ENV = "PLEX_ETL_ALERT_WEBHOOK"
ALERT_TIMEOUT_SECONDS = 10
RUN_FAILURE_SENSOR = "plex_etl_run_failure_alert"
ASSET_ALERT_SENSOR = "plex_etl_check_and_freshness_alert"
ASSET_ALERT_INTERVAL_SECONDS = 60
ASSET_ALERT_BATCH = 200  # events read per kind and tick; the cursor carries the rest to the next tick


def failure_message(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    error = context.failure_event.message or "no error message"
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags['dagster/asset_partition_range_start']}...{run.tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in run.tags else None
    )
    lines = [f"plex_etl run {run.run_id} ({run.job_name}) failed"]
    if run.asset_selection:
        lines.append("assets: " + ", ".join(sorted(k.to_user_string() for k in run.asset_selection)))
    if partition:
        lines.append(f"partitions: {partition}")
    lines.append(error[:2000])
    return "\n".join(lines)


def post_webhook(url: str, text: str, timeout: float = ALERT_TIMEOUT_SECONDS) -> int:
    """POST `{"text": text}` as JSON; returns the HTTP status (errors raise)."""
    # Imported here: urllib.request (with ssl, email, http.client) is only needed when a
    # sensor posts, not by every process that loads the code location.
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


@dg.run_failure_sensor(name=RUN_FAILURE_SENSOR, default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    text = failure_message(context)
    url = os.getenv(ALERT_WEBHOOK_ENV)
    if not url:
        context.log.warning(f"{ALERT_WEBHOOK_ENV} is not set; not posted: {text}")
        return
    status = post_webhook(url, text)
    context.log.info(f"run failure of {context.dagster_run.run_id} posted to the webhook (HTTP {status})")


@dataclass(frozen=True)
class AssetAlert:
    """One failure to post: a failed check evaluation or a freshness state turned FAIL."""

    storage_id: int
    text: str


def _latest_check_execution_id(instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]) -> int:
    return max((r.id for r in _check_executions(instance, check_keys, 1, failed_only=False)), default=0)


def _latest_storage_id(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> int:
    records = instance.event_log_storage.get_event_records(dg.EventRecordsFilter(event_type=event_type), limit=1)
    return records[0].storage_id if records else 0


def _records_after(
    instance: dg.DagsterInstance, event_type: dg.DagsterEventType, after: int, limit: int
) -> list[dg.EventLogRecord]:
    return list(instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=event_type, after_cursor=after), limit=limit, ascending=True
    ))


def _check_executions(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey], limit: int, failed_only: bool
) -> list[AssetCheckExecutionRecord]:
    status = {AssetCheckExecutionRecordStatus.FAILED} if failed_only else None
    return [record for key in check_keys
            for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=limit, status=status)]


def check_failure_alerts(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey], after: int, limit: int = ASSET_ALERT_BATCH
) -> tuple[list[AssetAlert], int]:
    """Failed evaluations of `check_keys` with an execution id above `after` that are blocking or
    of severity ERROR (warning checks such as `no_orphans_*` are left to the UI); returns them
    and the new cursor. Reads each check's execution history (the index tables, which every
    storage, run-sharded SQLite too, keeps across runs)."""
    alerts: list[AssetAlert] = []
    cursor = after
    for record in sorted(_check_executions(instance, check_keys, limit, failed_only=True), key=lambda r: r.id):
        if record.id <= after:
            continue
        cursor = max(cursor, record.id)
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        if not evaluation.blocking and evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        kind = "blocking check" if evaluation.blocking else "check"
        lines = [f"plex_etl {kind} {evaluation.check_name} failed on {evaluation.asset_key.to_user_string()}"]
        if evaluation.partition:
            lines.append(f"partition: {evaluation.partition}")
        if evaluation.description:
            lines.append(evaluation.description[:2000])
        lines.append(f"run {record.run_id}" if record.run_id else "reported without a run")
        alerts.append(AssetAlert(record.id, "\n".join(lines)))
    return alerts, cursor


def freshness_alerts(
    instance: dg.DagsterInstance, after: int, limit: int = ASSET_ALERT_BATCH
) -> tuple[list[AssetAlert], int]:
    """Freshness state changes to FAIL after storage id `after`; returns them and the new cursor."""
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    alerts: list[AssetAlert] = []
    cursor = after
    for record in _records_after(instance, dg.DagsterEventType.FRESHNESS_STATE_CHANGE, after, limit):
        cursor = record.storage_id
        event = record.event_log_entry.dagster_event
        change = event.event_specific_data if event else None
        if not isinstance(change, FreshnessStateChange) or change.new_state != FreshnessState.FAIL:
            continue
        alerts.append(AssetAlert(record.storage_id, (
            f"plex_etl table {change.key.to_user_string()} is stale: its freshness policy failed "
            f"(was {change.previous_state.value})"
        )))
    return alerts, cursor


def _parse_cursor(cursor: str | None) -> dict[str, int] | None:
    if not cursor:
        return None
    value = json.loads(cursor)
    return {"check": int(value["check"]), "freshness": int(value["freshness"])}


def asset_alert_sensor(
    name: str = ASSET_ALERT_SENSOR, minimum_interval_seconds: int = ASSET_ALERT_INTERVAL_SECONDS
) -> dg.SensorDefinition:
    """The sensor posting failed checks and freshness failures (see the module docstring)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts failed blocking/error checks and freshness failures to PLEX_ETL_ALERT_WEBHOOK, each once.",
    )
    def check_and_freshness_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        instance = context.instance
        check_keys = context.repository_def.asset_graph.asset_check_keys if context.repository_def else set()
        cursor = _parse_cursor(context.cursor)
        if cursor is None:  # first tick: start from now, do not post history
            context.update_cursor(json.dumps({
                "check": _latest_check_execution_id(instance, check_keys),
                "freshness": _latest_storage_id(instance, dg.DagsterEventType.FRESHNESS_STATE_CHANGE),
            }))
            return dg.SkipReason("cursor initialised; failures from now on are posted")
        checks, check_cursor = check_failure_alerts(instance, check_keys, cursor["check"])
        stale, freshness_cursor = freshness_alerts(instance, cursor["freshness"])
        url = os.getenv(ALERT_WEBHOOK_ENV)
        for alert in checks + stale:
            if url:
                # A failed post raises before the cursor moves: the next tick posts it again.
                post_webhook(url, alert.text)
            else:
                context.log.warning(f"{ALERT_WEBHOOK_ENV} is not set; not posted: {alert.text}")
        context.update_cursor(json.dumps({"check": check_cursor, "freshness": freshness_cursor}))
        return dg.SkipReason(f"{len(checks)} check failure(s), {len(stale)} freshness failure(s) posted")

    return check_and_freshness_alert


check_and_freshness_alert = asset_alert_sensor()
