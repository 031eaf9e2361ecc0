"""Where a range run's bookkeeping goes on the PostgreSQL instance (issue 14, D): cProfile.

    .venv/bin/python -m benchmarks.bookkeeping_profile --days 365            # both storages
    .venv/bin/python -m benchmarks.bookkeeping_profile --days 365 --stock    # dagster-postgres's only

One single-run range materialization, in process, of two daily-partitioned assets (the
second depends on the first) with a partitioned check on the first, as a dated table of
plex_etl records it (a planned and a materialized event per asset and day, one planned check
row per day), and nothing else: no rows, so what is timed is Dagster and its storage. Each
storage gets a fresh database `plexetl_pgbatch_profile_<storage>` on the PostgreSQL at
127.0.0.1:5432 (user postgres, trust auth), dropped afterwards. DAGSTER_EVENT_BATCH_SIZE=500,
as in the production image. Prints the run's seconds and the storage calls that matter.
"""

# No `from __future__ import annotations`: Dagster reads the assets' context annotation.
import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from benchmarks.bookkeeping import PG, PREFIX, postgres

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
# The storage calls a range run's bookkeeping goes through (dagster-postgres's and ours).
CALLS = ("_log_asset_planned_events|store_event_batch|store_event\\b|_store_asset_events"
         "|_store_asset_check_evaluation_planned|psycopg2._psycopg._connect|execute' of 'psycopg2")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("rows_ok", asset="orders")])
def orders(context: dg.AssetExecutionContext):
    for key in context.partition_keys:
        context.add_asset_metadata({"rows": len(key)}, partition_key=key)
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="rows_ok", passed=True)


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[orders])
def lines(context: dg.AssetExecutionContext) -> None:
    pass


def profile(storage: str, days: int) -> None:
    database = f"{PREFIX}_profile_{storage}"
    postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    postgres(f'CREATE DATABASE "{database}"')
    pg = {"postgres_db": {"hostname": PG["host"], "port": PG["port"], "db_name": database,
                          "username": PG["user"], "password": "", "scheme": "postgresql+psycopg2"}}
    instance_storage = {"postgres": pg} if storage == "stock" else {"custom": {
        "module": "plex_etl.instance_storage", "class": "BatchedPostgresStorage", "config": pg}}
    keys = DAYS.get_partition_keys()[:days]
    try:
        with tempfile.TemporaryDirectory() as home:
            Path(home, "dagster.yaml").write_text(yaml.safe_dump(
                {"telemetry": {"enabled": False}, "storage": instance_storage}))
            with dg.DagsterInstance.from_config(home) as instance:
                profiler = cProfile.Profile()
                started = time.perf_counter()
                profiler.enable()
                result = dg.materialize([orders, lines], instance=instance, tags={
                    ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
                profiler.disable()
                seconds = time.perf_counter() - started
        print(f"\n## {type(instance.event_log_storage).__name__}: {days} days x 2 assets, {seconds:.1f} s, "
              f"success {result.success}, load average {os.getloadavg()[0]:.1f}")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(CALLS)
    finally:
        postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--stock", action="store_true", help="dagster-postgres's storage only")
    args = parser.parse_args(argv)
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "500"
    for storage in ("stock",) if args.stock else ("stock", "batched"):
        profile(storage, args.days)


if __name__ == "__main__":
    main()
