"""Alerts posted to a webhook: every failed run, every failed blocking (or error-severity) asset
check, every table whose freshness policy turns FAIL; each once, in the order they happened,
with its cause.

`PLEX_ETL_ALERT_WEBHOOK` is the URL of an incoming webhook (Slack, Google Chat, Mattermost,
...); each message goes as JSON `{"text": ...}`, which all of them accept. When the variable is
unset the sensor logs each alert and posts nothing.

One sensor, `plex_etl_alerts`, reads two streams of the instance's event log after one cursor
(a storage id, which both share): the ends of runs (`fetch_run_status_changes`: success,
failure, cancellation) and the freshness state changes the daemon records from each table's
`FreshnessPolicy` (instance setting `freshness.enabled`, on by default). For each run that
ended it posts, in the order they completed, the run's failed checks (the check's own
description: "3 rows, MySQL has 4"), then, if the run failed, the run with each failed step's
error message; a step that failed because a blocking check failed refers to that check's alert
instead of repeating it. A failed check is therefore posted when its run ends: the instance's
check records are ordered by planning, not completion, and Dagster's SQLite storage keeps no
instance-wide order of check results, while runs end in one order everywhere. Warning checks
(`no_orphans_*`, a reconciliation that differs only in days the next tick reloads) stay in the
UI. Every run of the instance counts (production serves this code location only).

Exactly once: the cursor counts each message the webhook accepted. A webhook that cannot be
reached fails the tick (red under the sensor in the UI) and the next tick tries the same message
again; if it gave up after posting some, the tick saves how far it got and says why in its skip
reason. The first tick only records where the event log stands: failures from before the sensor
ever ran are not posted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import dagster as dg

from plex_etl.defs.dagster_private import freshness_changes, run_event_records, step_failure_text

ALERT_WEBHOOK_ENV = "PLEX_ETL_ALERT_WEBHOOK"
ALERT_TIMEOUT_SECONDS = 10
ALERT_SENSOR = "plex_etl_alerts"
ALERT_INTERVAL_SECONDS = 30
ALERT_BATCH = 100  # events read per stream and tick; the cursor carries the rest to the next tick
TEXT_LIMIT = 2000  # characters of one cause (a check's description, a step's error)
RUN_ENDS = (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_CANCELED)


@dataclass(frozen=True)
class Ended:
    """One event after the cursor: a run that ended, or a change of a table's freshness."""

    storage_id: int
    run: dg.DagsterRun | None = None
    failed: bool = False
    run_failure_message: str = ""
    stale_table: str = ""
    was: str = ""


def post_webhook(url: str, text: str, timeout: float = ALERT_TIMEOUT_SECONDS) -> int:
    """POST `{"text": text}` as JSON; returns the HTTP status (errors raise)."""
    # Imported here: urllib.request (with ssl, email, http.client) is only needed when the
    # sensor posts, not by every process that loads the code location.
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def post_alert(text: str, log: object | None = None) -> bool:
    """Post one alert that no run carries (a configuration problem, a stopped change capture) to
    the webhook; without PLEX_ETL_ALERT_WEBHOOK only log it. Errors raise: the caller, which
    reported the failure without a run, decides whether to try again."""
    url = os.getenv(ALERT_WEBHOOK_ENV)
    if not url:
        if log is not None:
            log.warning(f"{ALERT_WEBHOOK_ENV} is not set; not posted: {text}")  # type: ignore[attr-defined]
        return False
    post_webhook(url, text[:TEXT_LIMIT * 4])
    return True


def run_header(run: dg.DagsterRun) -> list[str]:
    """The run's assets and partitions, for a run failure's message."""
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags['dagster/asset_partition_range_start']}...{run.tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in run.tags else None
    )
    lines = []
    if run.asset_selection:
        lines.append("assets: " + ", ".join(sorted(k.to_user_string() for k in run.asset_selection)))
    if partition:
        lines.append(f"partitions: {partition}")
    return lines


def alerted(evaluation: dg.AssetCheckEvaluation) -> bool:
    """A failed check worth waking someone for: blocking, or of severity ERROR."""
    return not evaluation.passed and (evaluation.blocking or evaluation.severity == dg.AssetCheckSeverity.ERROR)


def check_message(evaluation: dg.AssetCheckEvaluation, run_id: str) -> str:
    kind = "blocking check" if evaluation.blocking else "check"
    lines = [f"plex_etl {kind} {evaluation.check_name} failed on {evaluation.asset_key.to_user_string()}"]
    if evaluation.partition:
        lines.append(f"partition: {evaluation.partition}")
    lines.append((evaluation.description or "no description")[:TEXT_LIMIT])
    lines.append(f"run {run_id}")
    return "\n".join(lines)


def run_messages(instance: dg.DagsterInstance, ended: Ended) -> list[str]:
    """What a run that ended posts: its failed checks in completion order, then, if it failed,
    the run with each failed step's cause (a blocking check's failure is named, not repeated)."""
    run = ended.run
    assert run is not None
    records = run_event_records(instance, run.run_id, {dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                                                       dg.DagsterEventType.STEP_FAILURE})
    messages: list[str] = []
    blocking_by_step: dict[str, list[str]] = {}
    step_failures: list[dg.DagsterEvent] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_failures.append(event)
            continue
        evaluation = event.event_specific_data
        if isinstance(evaluation, dg.AssetCheckEvaluation) and alerted(evaluation):
            messages.append(check_message(evaluation, run.run_id))
            if evaluation.blocking and event.step_key:
                blocking_by_step.setdefault(event.step_key, []).append(
                    f"{evaluation.check_name} on {evaluation.asset_key.to_user_string()}")
    if not ended.failed:
        return messages
    lines = [f"plex_etl run {run.run_id} ({run.job_name}) failed", *run_header(run)]
    for event in step_failures:
        if event.step_key in blocking_by_step:
            checks = ", ".join(blocking_by_step[event.step_key])
            lines.append(f"step {event.step_key}: blocking check failed: {checks} (its alert above has the cause)")
        else:
            lines.append(f"step {event.step_key}: {step_failure_text(event)[:TEXT_LIMIT]}")
    if not step_failures:  # the run itself failed: killed, timed out, could not start
        lines.append((ended.run_failure_message or "no error message")[:TEXT_LIMIT])
    return [*messages, "\n".join(lines)]


def pending_events(instance: dg.DagsterInstance, after: int, limit: int = ALERT_BATCH) -> list[Ended]:
    """Runs that ended and freshness changes stored after `after`, oldest first. Each stream is
    read up to `limit`; events beyond the last one read of a full stream wait for the next tick,
    so that none is skipped."""
    streams: list[list[Ended]] = []
    for event_type in RUN_ENDS:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after), limit=limit, ascending=True,
        ).records
        run_ids = [r.event_log_entry.run_id for r in records]
        runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records(
            filters=dg.RunsFilter(run_ids=run_ids))} if run_ids else {}
        streams.append([Ended(r.storage_id, runs.get(r.event_log_entry.run_id),
                              failed=event_type == dg.DagsterEventType.RUN_FAILURE,
                              run_failure_message=r.event_log_entry.message or "") for r in records])
    # Every change, not only those to FAIL: the last one read bounds what this tick may handle.
    streams.append([Ended(c.storage_id, stale_table=c.asset_key.to_user_string() if c.new_state == "FAIL" else "",
                          was=c.previous_state) for c in freshness_changes(instance, after, limit)])
    horizon = min((s[-1].storage_id for s in streams if len(s) >= limit), default=None)
    events = sorted((e for s in streams for e in s), key=lambda e: e.storage_id)
    return [e for e in events if horizon is None or e.storage_id <= horizon]


def messages_of(instance: dg.DagsterInstance, ended: Ended) -> list[str]:
    if ended.stale_table:
        return [f"plex_etl table {ended.stale_table} is stale: its freshness policy failed (was {ended.was})"]
    if ended.run is None:  # a freshness change that is no failure, or a run deleted meanwhile
        return []
    return run_messages(instance, ended)


def latest_storage_id(instance: dg.DagsterInstance) -> int:
    """Where the event log stands for the two streams (the first tick starts there)."""
    ids = [r.storage_id for t in RUN_ENDS for r in instance.fetch_run_status_changes(t, limit=1).records]
    ids += [c.storage_id for c in freshness_changes(instance, None, 1)]
    return max(ids, default=0)


def alert_sensor(name: str = ALERT_SENSOR, minimum_interval_seconds: int = ALERT_INTERVAL_SECONDS
                 ) -> dg.SensorDefinition:
    """The sensor posting every alert (see the module docstring)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts every failed run, failed blocking/error check and stale table to PLEX_ETL_ALERT_WEBHOOK, "
        "each once, in the order they happened.",
    )
    def alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        if not context.cursor:  # first tick: start from now, do not post history
            return dg.SensorResult(skip_reason="cursor initialised; failures from now on are posted",
                                   cursor=json.dumps({"after": latest_storage_id(instance), "posted": 0}))
        cursor = json.loads(context.cursor)
        after, posted = int(cursor["after"]), int(cursor.get("posted", 0))
        url = os.getenv(ALERT_WEBHOOK_ENV)
        sent = 0
        try:
            for ended in pending_events(instance, after):
                # `posted`: the messages of this event that an earlier tick delivered.
                for text in messages_of(instance, ended)[posted:]:
                    if url:
                        post_webhook(url, text)
                    else:
                        context.log.warning(f"{ALERT_WEBHOOK_ENV} is not set; not posted: {text}")
                    posted += 1
                    sent += 1
                after, posted = ended.storage_id, 0
            reason = f"{sent} alert(s) " + ("posted" if url else f"logged ({ALERT_WEBHOOK_ENV} is not set)")
        except Exception as exc:  # the webhook or the instance failed
            if not sent:
                raise  # a failed tick, red in the UI; the cursor stays, the next tick tries again
            # What was delivered stays delivered: the cursor moves past it (a failed tick would
            # not save it, and the next tick would post those messages twice).
            context.log.error(f"alerts stopped after {sent} posted: {exc}; the next tick resumes there")
            reason = f"{sent} alert(s) posted, then: {exc}; the next tick resumes there"
        return dg.SensorResult(skip_reason=reason, cursor=json.dumps({"after": after, "posted": posted}))

    return alerts


alerts_sensor = alert_sensor()
