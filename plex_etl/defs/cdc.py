"""Change capture in Dagster: per source with `capture: binlog` tables, a job `<source>_cdc`
whose one step applies a bounded batch of the binary log (plex_etl.cdc.apply.step), and a
sensor launching it every 30 s while none is queued or running.

Each run shows what it did as output metadata (lag in seconds behind the source, row changes
per kind, rows merged, keys deleted, positions) and a materialization of today's partition of
every captured table's asset (the whole table is current: its freshness policy and per-day
status say so). A stopped table (schema change in the log), a purged position or a missing privilege
fail the run with the message and its recovery; a resync is the same job launched with config
`resync: [table, ...]` (or `[all]`). Captured tables keep their asset (and its checks: the
daily reconciliation covers them) but leave the polling automation: see `without_polling`.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, WarehouseResource
from plex_etl.sources import Source

SENSOR_SECONDS = 30


class CdcConfig(dg.Config):
    max_events: int = Field(default=20_000, description="row changes per run (the run ends at the next commit)")
    max_seconds: float = Field(default=20.0, description="reading time per run (ends at the next commit)")
    resync: list[str] = Field(default_factory=list, description="tables to copy again whole (or ['all'])")


def cdc_job_name(source: Source) -> str:
    return f"{source.name}_cdc"


def build_cdc_job(source: Source, catalog: Catalog, plan: SourcePlan) -> dg.JobDefinition | None:
    tables = plan.captured
    if not tables:
        return None
    keys = {t: table_key(source.name, catalog, t) for t in tables}

    @dg.op(name=f"{source.name}_cdc_step", tags={"plex_etl/source": source.name},
           description=f"Applies the binary log of {source.name} to: {', '.join(tables)}")
    def _step(context: dg.OpExecutionContext, config: CdcConfig, mysql: MySQLResource,
              warehouse: WarehouseResource) -> dg.Output[None]:
        # Imported here: the binary-log client stays off the code location's import path.
        from plex_etl.cdc.apply import step, stopped_message
        from plex_etl.cdc.reader import CaptureError

        resync = tables if "all" in config.resync else config.resync
        unknown = sorted(set(resync) - set(tables))
        if unknown:
            raise dg.Failure(f"resync: {unknown} are not captured tables of {source.name} ({tables})",
                             allow_retries=False)
        try:
            result = step(mysql.source(source.name), catalog, plan, warehouse.get(), warehouse.dataset,
                          max_events=config.max_events, max_seconds=config.max_seconds, resync=resync)
        except CaptureError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        totals = result.totals()
        today = dt.datetime.now(ZoneInfo(source.time_zone)).date().isoformat()
        for table in tables:
            if table in result.stopped:
                continue
            counts = result.changes.get(table, {})
            context.log_event(dg.AssetMaterialization(asset_key=keys[table], partition=today, metadata={
                "cdc_inserts": counts.get("inserts", 0), "cdc_updates": counts.get("updates", 0),
                "cdc_deletes": counts.get("deletes", 0),
                "rows_merged": result.rows_merged.get(table, 0), "keys_deleted": result.keys_deleted.get(table, 0),
                "position": str(result.end) if result.end else "none",
                "lag_seconds": dg.FloatMetadataValue(round(result.lag_seconds, 3)),
                "first_copy_rows": result.snapshots.get(table, 0),
                "stopped": result.stopped.get(table, "no"),
            }))
        context.log.info(
            f"{source.name}: {result.events} row changes {dict(totals)} from {result.start} to {result.end}, "
            f"lag {result.lag_seconds:.1f} s{', caught up' if result.caught_up else ''}"
        )
        if message := stopped_message(result):
            context.log.error(message)
            raise dg.Failure(message, allow_retries=False, metadata={"stopped": dg.TextMetadataValue(message)})
        return dg.Output(None, metadata={
            "lag_seconds": dg.FloatMetadataValue(round(result.lag_seconds, 3)),
            "inserts": totals.get("inserts", 0), "updates": totals.get("updates", 0),
            "deletes": totals.get("deletes", 0),
            "rows_merged": sum(result.rows_merged.values()), "keys_deleted": sum(result.keys_deleted.values()),
            "start_position": str(result.start) if result.start else "none",
            "position": str(result.end) if result.end else "none",
            "caught_up": result.caught_up,
            "first_copies": ", ".join(f"{t} ({n} rows)" for t, n in result.snapshots.items()) or "none",
            "tables_no_longer_captured": ", ".join(result.dropped) or "none",
        })

    @dg.job(name=cdc_job_name(source), tags={"plex_etl/source": source.name, "plex_etl/cdc": "binlog"},
            description=f"Change capture of {source.name}: one bounded batch of the binary log, exactly once.")
    def _job() -> None:
        _step()

    return _job


def cdc_sensor(source: Source, job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(name=f"{source.name}_cdc_sensor", job=job, minimum_interval_seconds=SENSOR_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Launches {job.name} every {SENSOR_SECONDS} s while no run of it is queued or running.")
    def _sensor(context: dg.SensorEvaluationContext):
        active = context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job.name, statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]),
            limit=1,
        )
        if active:
            return dg.SkipReason(f"{job.name} run {active[0].dagster_run.run_id} is still in progress")
        return dg.RunRequest()

    return _sensor


def without_polling(
    assets: list[dg.AssetsDefinition], source: Source, catalog: Catalog, plan: SourcePlan
) -> list[dg.AssetsDefinition]:
    """The source's assets with the polling automation removed from captured tables: change
    capture keeps them current, and a reload racing a change batch could land an older row.
    A manual materialization stays possible (prefer a resync)."""
    captured = {table_key(source.name, catalog, t) for t in plan.captured}
    if not captured:
        return assets
    return [
        a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=None)
                          if spec.key in captured else spec)
        if set(a.keys) & captured else a
        for a in assets
    ]
