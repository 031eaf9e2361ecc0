"""Alerts: every failed run of this code location is posted to a webhook.

`PLEX_ETL_ALERT_WEBHOOK` is the URL of an incoming webhook (Slack, Google Chat, Mattermost,
...); the message goes as JSON `{"text": ...}`, which all of them accept. When the variable
is unset the sensor logs the failure and posts nothing. A webhook that cannot be reached
fails the sensor tick (shown in the UI under the sensor), so a lost alert is visible.
"""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg

ALERT_WEBHOOK_ENV = "PLEX_ETL_ALERT_WEBHOOK"
ALERT_TIMEOUT_SECONDS = 10
RUN_FAILURE_SENSOR = "plex_etl_run_failure_alert"


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
