"""A tiny code location for test_deploy_daemon.py: partitioned assets in quantio's pool, an
asset whose blocking check fails, and the project's alert sensor (ticking every 2 s instead of 30).

Each step appends one JSON line {asset, partition, run_id, pid, start, end} to
`$PLEX_ETL_DAEMON_TEST_DIR/steps.jsonl` (`end` is missing for a step that never finished), so
the test sees when steps ran and which process ran them. The in-process executor runs a
step in the run worker itself: killing the recorded pid kills the run.
"""

import json
import os
import time
from pathlib import Path

import dagster as dg

from plex_etl.defs.alerts import ALERT_SENSOR, alert_sensor

POOL = "mysql_quantio"  # plex_etl.defs.assets.pool_name of quantio; its pool_limit is 1
STEP_SECONDS = 3.0


def _record(context: dg.AssetExecutionContext, **fields: object) -> None:
    line = {"asset": context.asset_key.to_user_string(), "partition": context.partition_key,
            "run_id": context.run_id, "pid": os.getpid(), **fields}
    with (Path(os.environ["PLEX_ETL_DAEMON_TEST_DIR"]) / "steps.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]), pool=POOL)
def extraction(context: dg.AssetExecutionContext) -> None:
    """Stands for a table extraction: holds the pool slot for STEP_SECONDS."""
    start = time.time()
    time.sleep(STEP_SECONDS)
    _record(context, start=start, end=time.time())


HANGING = ("killed", "hung")


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["killed", "next", "hung", "after"]), pool=POOL)
def stuck(context: dg.AssetExecutionContext) -> None:
    """Partitions `killed` and `hung` hang (until killed or stopped) unless the run is a retry."""
    start = time.time()
    if context.partition_key in HANGING and "dagster/retry_number" not in context.run.tags:
        _record(context, start=start)
        time.sleep(600)
    _record(context, start=start, end=time.time())


@dg.asset(check_specs=[dg.AssetCheckSpec("row_count_matches_mysql", asset="checked", blocking=True)])
def checked():
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name="row_count_matches_mysql", passed=False, description="3 rows, MySQL has 4")


defs = dg.Definitions(
    assets=[extraction, stuck, checked],
    sensors=[alert_sensor(ALERT_SENSOR, minimum_interval_seconds=2)],
    executor=dg.in_process_executor,
)
