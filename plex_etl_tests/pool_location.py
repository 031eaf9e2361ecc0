"""A tiny code location for test_dead_runs.py: one asset in plex's pool `mysql_plex` that holds its
slot while the file `$PLEX_ETL_TEST_HOLD_FILE` exists (a load reading MySQL, as far as the pool
is concerned), and the project's dead-runs sensor."""

import os
import time
from pathlib import Path

import dagster as dg

from plex_etl.defs.dead_runs import dead_runs_sensor

POOL = "mysql_plex"


@dg.asset(pool=POOL)
def extraction(context: dg.AssetExecutionContext) -> None:
    hold = Path(os.environ["PLEX_ETL_TEST_HOLD_FILE"])
    context.log.info(f"holding a {POOL} slot (pid {os.getpid()}) while {hold} exists")
    deadline = time.monotonic() + 300
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


defs = dg.Definitions(assets=[extraction], sensors=[dead_runs_sensor])
