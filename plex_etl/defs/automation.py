"""Freshness tiers as declarative automation.

Each tier (plan file) has a cron. At every tick of its tier, a table re-loads the last
`lookback` daily partitions (default 3, per source, tier or table in the plan), which
also picks up late changes to recent days; once a week (Sunday 02:00) every dated table
re-loads the last `weekly_catchup_days` partitions. After an outage, each tick also loads
every missing or failed partition of the last `gap_fill_days` (default 31): the gap closes
at the first tick without flooding MySQL with the whole history; a longer gap shows in the
daily reconciliation check, and `plex-etl reconcile --repair` loads it. No window reaches the
first partition (plan validation: every window is shorter than `window_days`): it holds the
whole history, loaded by a full refresh and by repairs, never by a tick. Rows inserted since
the last load but dated outside the days a tick reads come with it anyway (new keys, see
defs/assets.py::high_water_key).
Snapshot tables (no partitions) load the whole table at each tick of their tier.

One automation sensor per tier and time zone (`tier_critical_every_4h_Buenos_Aires`, ...),
RUNNING by default, so the UI shows which tables refresh when and each sensor's ticks
list only its own tier's requests; the views have their own sensor and refresh after
their tables.
"""

import datetime as dt
import re
from typing import Any

import dagster as dg

from plex_etl.catalog.plan import TIERS, SourcePlan, TablePlan
from plex_etl.sources import Source

WEEKLY_CATCHUP_CRON = "0 2 * * 0"


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
    if table.strategy == "snapshot":  # unpartitioned: the whole table at each tick
        condition = dg.AutomationCondition.cron_tick_passed(cron, source.time_zone).since_last_handled()
    else:
        condition = reload_on(cron, source.time_zone, plan.lookback_for(table), plan.gap_fill_days) | reload_on(
            WEEKLY_CATCHUP_CRON, source.time_zone, plan.weekly_catchup_days
        )
    return (
        condition
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.backfill_in_progress()
    ).with_label(f"tier {table.tier}: {tier_cadence(table.tier)} ({source.time_zone})")


def freshness_windows(interval: dt.timedelta) -> tuple[dt.timedelta, dt.timedelta]:
    """(warn, fail) for something refreshed every `interval`: warn when it missed one tick,
    fail when it missed two (the hour lets a long load finish)."""
    return interval, interval * 2 + dt.timedelta(hours=1)


def freshness_policy_every(interval: dt.timedelta) -> dg.FreshnessPolicy:
    warn, fail = freshness_windows(interval)
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


def freshness_policy(table: TablePlan) -> dg.FreshnessPolicy:
    """Warn when a table misses one tick of its tier, fail when it misses two."""
    return freshness_policy_every(tier_interval(table.tier))


def tier_interval(tier: str) -> dt.timedelta:
    _minute, hour, _day, _month, weekday = TIERS[tier].split()
    if weekday != "*":
        return dt.timedelta(days=7)
    if hour.startswith("*/"):
        return dt.timedelta(hours=int(hour[2:]))
    return dt.timedelta(days=1)


_WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


def tier_cadence(tier: str) -> str:
    """A tier's cron in words: 'every 4h', 'daily 06:00', 'weekly Sun 03:00'."""
    minute, hour, _day, _month, weekday = TIERS[tier].split()
    if hour.startswith("*/"):
        return f"every {hour[2:]}h" + (f" at :{int(minute):02d}" if minute != "0" else "")
    at = f"{int(hour):02d}:{int(minute):02d}"
    if weekday != "*":
        return f"weekly {_WEEKDAYS[int(weekday) % 7]} {at}"
    return f"daily {at}"


def tier_schedule(source: Source, plan: SourcePlan, table: TablePlan) -> dict[str, str]:
    """The refresh schedule of one table in words, entry by entry (the asset's metadata)."""
    schedule = {"refresh": f"{tier_cadence(table.tier)} ({source.time_zone})"}
    if table.strategy == "snapshot":
        schedule["each_refresh_loads"] = "the whole table, as today's snapshot"
    else:
        schedule["each_refresh_loads"] = (f"the last {plan.lookback_for(table)} days, and missing or failed days "
                                          f"of the last {plan.gap_fill_days}")
        schedule["weekly_catch_up"] = (f"{tier_cadence_of(WEEKLY_CATCHUP_CRON)}: the last "
                                       f"{plan.weekly_catchup_days} days")
        schedule["daily_partitions"] = (f"from the 1st of the month {plan.window_days} days back; the first one "
                                        f"also holds all older history (from {plan.first_day})")
    warn, fail = freshness_windows(tier_interval(table.tier))
    schedule["freshness"] = f"warning after {_hours(warn)}, failure after {_hours(fail)}"
    return schedule


def tier_cadence_of(cron: str) -> str:
    minute, hour, _day, _month, weekday = cron.split()
    at = f"{int(hour):02d}:{int(minute):02d}"
    return f"weekly {_WEEKDAYS[int(weekday) % 7]} {at}" if weekday != "*" else f"daily {at}"


def _hours(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} days" if hours % 24 == 0 and hours >= 48 else f"{hours}h"


def tier_sensor_name(tier: str, time_zone: str) -> str:
    """'tier_critical_every_4h_Buenos_Aires': the tier, its cadence and its time zone."""
    cadence = re.sub(r"[^A-Za-z0-9]+", "_", tier_cadence(tier)).strip("_")
    zone = re.sub(r"[^A-Za-z0-9]+", "_", time_zone.rsplit("/", 1)[-1]).strip("_")
    return f"tier_{tier}_{cadence}_{zone}"


def tier_sensors(sources: list[Source], plans: dict[str, SourcePlan]) -> list[dg.AutomationConditionSensorDefinition]:
    """One RUNNING automation sensor per tier and time zone, over the tables of that tier."""
    by_sensor: dict[tuple[str, str], list[str]] = {}
    for source in sources:
        for table in plans[source.name].included:
            by_sensor.setdefault((table.tier, source.time_zone), [])
            if source.name not in by_sensor[(table.tier, source.time_zone)]:
                by_sensor[(table.tier, source.time_zone)].append(source.name)
    sensors = []
    order = list(TIERS)
    for (tier, time_zone), names in sorted(by_sensor.items(), key=lambda i: (order.index(i[0][0]), i[0][1])):
        in_sources = dg.AssetSelection.tag("plex_etl/source", names[0])
        for name in names[1:]:
            in_sources = in_sources | dg.AssetSelection.tag("plex_etl/source", name)
        sensors.append(dg.AutomationConditionSensorDefinition(
            tier_sensor_name(tier, time_zone),
            target=dg.AssetSelection.tag("plex_etl/tier", tier) & in_sources,
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=60,
            description=f"Tier {tier}: {tier_cadence(tier)} ({time_zone}) for the tables of "
            f"{', '.join(names)} in this tier; each tick reloads their lookback window.",
        ))
    return sensors


VIEWS_SENSOR = "views_after_their_tables"


def views_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        VIEWS_SENSOR,
        target=dg.AssetSelection.groups("views"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Refreshes each analytical view after one of its tables has loaded.",
    )


def view_condition() -> dg.AutomationCondition:
    """A view refreshes once its tables have loaded (and none is loading) since its last refresh."""
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after its tables")


RECONCILE_CRON = "30 4 * * *"  # off-peak: the pharmacies are closed, the night ticks are done


def reconcile_condition(time_zone: str) -> dg.AutomationCondition:
    """The whole-table reconciliation check: daily at RECONCILE_CRON. It reads the whole table
    on both sides, so it skips itself in the runs that load its table and merely select every
    check of it (defs/checks.py, rides_along)."""
    return dg.AutomationCondition.cron_tick_passed(RECONCILE_CRON, time_zone).since_last_handled().with_label(
        f"daily reconciliation ({RECONCILE_CRON}, {time_zone})"
    )


def reconcile_job(source: Source, checks: dg.AssetChecksDefinition) -> Any:
    """A source's reconciliation checks as one job, to run by hand from the UI's Launchpad."""
    return dg.define_asset_job(
        f"{source.name}_reconciliation",
        selection=dg.AssetSelection.checks(checks),
        description=f"Compares every table of {source.name} with MySQL, day by day (counts and keys); "
        f"the tier sensors run the same checks daily at {RECONCILE_CRON}.",
    )
