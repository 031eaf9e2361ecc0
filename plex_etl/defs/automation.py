"""Freshness tiers as declarative automation.

Each tier (plan file) has a cron. At every tick of its tier, a table re-loads the last
`lookback` daily partitions (default 3, per source, tier or table in the plan), which
also picks up late changes to recent days; once a week (Sunday 02:00) every dated table
re-loads the last `weekly_catchup_days` partitions. After an outage, each tick also loads
every missing or failed partition of the last `gap_fill_days` (default 31): the gap closes
at the first tick without flooding MySQL with the whole history; a longer gap shows in the
daily reconciliation check, and `plex-etl reconcile --repair` loads it. Snapshot tables
only ever load today.
The automation sensor that evaluates these conditions is RUNNING by default.
"""

import datetime as dt

import dagster as dg

from plex_etl.catalog.plan import TIERS, SourcePlan, TablePlan
from plex_etl.sources import Source

WEEKLY_CATCHUP_CRON = "0 2 * * 0"
AUTOMATION_SENSOR = "plex_etl_automation"


def window(days: int) -> dg.AutomationCondition:
    """The latest `days` daily partitions (today included)."""
    # in_latest_time_window counts back from the end of today's partition; a delta of
    # N days therefore covers exactly N partitions.
    return dg.AutomationCondition.in_latest_time_window(lookback_delta=dt.timedelta(days=days))


def reload_on(cron: str, time_zone: str, days: int, gap_days: int = 0) -> dg.AutomationCondition:
    """At each tick: the last `days` partitions, and the missing or failed ones of the last `gap_days`."""
    partitions = window(days)
    if gap_days > days:
        gaps = dg.AutomationCondition.missing() | dg.AutomationCondition.execution_failed()
        partitions = partitions | (gaps & window(gap_days)).with_label(f"gap in the last {gap_days} days")
    return dg.AutomationCondition.cron_tick_passed(cron, time_zone).since_last_handled() & partitions


def table_condition(source: Source, plan: SourcePlan, table: TablePlan) -> dg.AutomationCondition:
    cron = TIERS[table.tier]
    if table.strategy == "snapshot":
        condition = reload_on(cron, source.time_zone, 1)
    else:
        condition = reload_on(cron, source.time_zone, plan.lookback_for(table), plan.gap_fill_days) | reload_on(
            WEEKLY_CATCHUP_CRON, source.time_zone, plan.weekly_catchup_days
        )
    return (
        condition
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.backfill_in_progress()
    ).with_label(f"tier {table.tier} ({cron})")


def freshness_policy(table: TablePlan) -> dg.FreshnessPolicy:
    """Warn when a table misses one tick of its tier, fail when it misses two."""
    interval = tier_interval(table.tier)
    return dg.FreshnessPolicy.time_window(fail_window=interval * 2 + dt.timedelta(hours=1), warn_window=interval)


def tier_interval(tier: str) -> dt.timedelta:
    _minute, hour, _day, _month, weekday = TIERS[tier].split()
    if weekday != "*":
        return dt.timedelta(days=7)
    if hour.startswith("*/"):
        return dt.timedelta(hours=int(hour[2:]))
    return dt.timedelta(days=1)


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Evaluates each table's tier condition: reloads the lookback window at every tick.",
    )


RECONCILE_CRON = "30 4 * * *"  # off-peak: the pharmacies are closed, the night ticks are done


def reconcile_schedule(source: Source, checks: dg.AssetChecksDefinition) -> dg.ScheduleDefinition:
    """Runs a source's whole-table reconciliation checks daily, off-peak."""
    job = dg.define_asset_job(
        f"{source.name}_reconciliation",
        selection=dg.AssetSelection.checks(checks),
        description=f"Compares every table of {source.name} with MySQL, day by day (counts and keys).",
    )
    return dg.ScheduleDefinition(
        name=f"{source.name}_reconciliation_daily",
        job=job,
        cron_schedule=RECONCILE_CRON,
        execution_timezone=source.time_zone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily whole-table reconciliation (a hard delete or a missed day turns the table red).",
    )


FIRST_PARTITION_CRON = "30 2 * * 0"  # Sunday, after the weekly catch-up


def first_partition_schedule(source: Source, plan: SourcePlan, keys: list[dg.AssetKey]) -> dg.ScheduleDefinition:
    """Weekly reload of the dated tables' first partition: it also holds their undated rows and
    those dated before `first_day`, which no tick's window reaches (see design notes)."""
    job = dg.define_asset_job(
        f"{source.name}_first_partition",
        selection=dg.AssetSelection.assets(*keys),
        description=f"Reloads {plan.first_day} of {source.name}'s dated tables: with it, the undated "
        "rows and those dated before the first partition.",
    )

    @dg.schedule(
        name=f"{source.name}_first_partition_weekly", job=job, cron_schedule=FIRST_PARTITION_CRON,
        execution_timezone=source.time_zone, default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Weekly reload of the first partition (undated and early rows).",
    )
    def _first_partition(_context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(partition_key=plan.first_day.isoformat())

    return _first_partition
