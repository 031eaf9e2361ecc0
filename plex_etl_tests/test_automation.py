"""Freshness tiers as automation: which assets and partitions are requested, and when."""

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from plex_etl.catalog.plan import PlanError, validate
from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.assets import build_source_assets
from plex_etl.defs.automation import VIEWS_SENSOR, freshness_policy, tier_sensors
from plex_etl.sources import get_source

WHOLE = "whole table"
TZ = ZoneInfo("America/Argentina/Buenos_Aires")
CRITICAL = ["asientos", "asientos_detalle", "factlineas"]


# The tests' calendar: the rolling window of partitions is placed as on this day, whatever the
# day the tests run.
TODAY = dt.date(2026, 11, 29)


def plex_assets(**plan_changes) -> list[dg.AssetsDefinition]:
    catalog, plan = load_source_catalog("plex")
    return build_source_assets(get_source("plex"), catalog, replace(plan, **plan_changes), today=TODAY)


class Clock:
    """Evaluates the automation conditions at chosen instants, carrying the cursor like the daemon.

    Requested partitions per table; an unpartitioned (snapshot) table requested shows as {WHOLE}.

    `loaded` days are recorded as materialized for every table first (a deployment that has
    been running), so that only the ticks' own windows are requested, not gaps.
    """

    def __init__(self, assets: list[dg.AssetsDefinition], loaded: set[str] = frozenset()) -> None:
        from plex_etl.definitions import defs

        self.defs = dg.Definitions(assets=assets, resources=defs.resources)
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.loaded(assets, loaded)

    def loaded(self, assets: list[dg.AssetsDefinition], partitions: set[str]) -> None:
        for assets_def in assets:
            if assets_def.partitions_def is None:  # a snapshot table: loaded once is enough
                if partitions:
                    self.instance.report_runless_asset_event(dg.AssetMaterialization(assets_def.key))
                continue
            for partition in sorted(partitions):
                self.instance.report_runless_asset_event(dg.AssetMaterialization(assets_def.key, partition=partition))

    def at(self, when: dt.datetime) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, evaluation_time=when, cursor=self.cursor
        )
        self.cursor = result.cursor
        requested = {}
        for assets_def in self.defs.assets:
            for key in assets_def.keys:
                if assets_def.partitions_def is None:
                    if result.get_num_requested(key):
                        requested[key.path[-1]] = {WHOLE}
                    continue
                partitions = result.get_requested_partitions(key)
                if partitions:
                    requested[key.path[-1]] = set(partitions)
        return requested


def days(last: dt.date, n: int) -> set[str]:
    return {(last - dt.timedelta(days=i)).isoformat() for i in range(n)}


# Every table loaded over the 45 days up to the last day the tests look at.
HISTORY = days(dt.date(2026, 11, 29), 45)


@pytest.fixture(scope="module")
def clock_assets():
    return plex_assets()


def test_critical_tier_reloads_the_last_three_days_at_its_tick_and_nothing_in_between(clock_assets):
    clock = Clock(clock_assets, HISTORY)
    friday = dt.date(2026, 11, 27)
    assert clock.at(dt.datetime(2026, 11, 27, 3, 58, tzinfo=TZ)) == {}
    at_tick = clock.at(dt.datetime(2026, 11, 27, 4, 1, tzinfo=TZ))
    for table in CRITICAL:
        assert at_tick[table] == days(friday, 3), table
    assert "factcabecera" not in at_tick  # high tier: every 6h
    assert "stock" not in at_tick  # snapshots tick daily at 06:00
    for minute in (4 * 60 + 2, 5 * 60, 6 * 60 + 30, 7 * 60 + 59):
        between = clock.at(dt.datetime(2026, 11, 27, tzinfo=TZ) + dt.timedelta(minutes=minute))
        assert not set(between) & set(CRITICAL), (minute, between)
    again = clock.at(dt.datetime(2026, 11, 27, 8, 1, tzinfo=TZ))
    assert {t: again.get(t) for t in CRITICAL} == {t: days(friday, 3) for t in CRITICAL}


def test_each_tier_at_its_own_cron(clock_assets):
    clock = Clock(clock_assets, HISTORY)
    clock.at(dt.datetime(2026, 11, 27, 5, 58, tzinfo=TZ))
    six = clock.at(dt.datetime(2026, 11, 27, 6, 1, tzinfo=TZ))
    assert six["factcabecera"] == days(dt.date(2026, 11, 27), 3)  # high: every 6h
    assert six["apppedidos"] == days(dt.date(2026, 11, 27), 3)  # app orders: every 2h
    assert six["stock"] == {WHOLE}  # master_daily snapshot: unpartitioned, the whole table
    assert six["clientes"] == days(dt.date(2026, 11, 27), 3)  # master_daily upsert
    assert "asientos" not in six and "empresas" not in six  # critical at 4/8h, weekly on Sunday


def test_weekly_catch_up_reloads_seven_days(clock_assets):
    clock = Clock(clock_assets, HISTORY)
    sunday = dt.date(2026, 11, 29)
    clock.at(dt.datetime(2026, 11, 29, 1, 58, tzinfo=TZ))
    catch_up = clock.at(dt.datetime(2026, 11, 29, 2, 1, tzinfo=TZ))
    assert catch_up["factcabecera"] == days(sunday, 7)
    assert catch_up["reclineas"] == days(sunday, 7)
    assert "stock" not in catch_up  # a snapshot has no past to catch up


def test_lookback_is_configurable_per_tier():
    assets = plex_assets(tier_lookback_days={"critical": 2})
    clock = Clock(assets, HISTORY)
    clock.at(dt.datetime(2026, 11, 27, 3, 58, tzinfo=TZ))
    requested = clock.at(dt.datetime(2026, 11, 27, 4, 1, tzinfo=TZ))
    assert requested["factlineas"] == days(dt.date(2026, 11, 27), 2)


def test_one_running_sensor_per_tier_named_with_cadence_and_time_zone(clock_assets):
    _catalog, plan = load_source_catalog("plex")
    sensors = tier_sensors([get_source("plex")], {"plex": plan})
    names = [s.name for s in sensors]
    assert names == [
        "tier_critical_every_4h_Buenos_Aires", "tier_high_every_6h_Buenos_Aires",
        "tier_standard_every_8h_Buenos_Aires", "tier_app_orders_every_2h_Buenos_Aires",
        "tier_master_daily_daily_06_00_Buenos_Aires", "tier_master_weekly_weekly_Sun_03_00_Buenos_Aires",
    ]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors)
    graph = Clock(clock_assets).defs.resolve_asset_graph()
    critical = sensors[0].asset_selection.resolve(graph)
    assert {k.path[-1] for k in critical} == {p.table for p in plan.included if p.tier == "critical"}
    covered = [k for s in sensors for k in s.asset_selection.resolve(graph)]
    assert sorted(covered) == sorted(k for a in clock_assets for k in a.keys)  # each table exactly once
    spec = next(iter(next(a for a in clock_assets if dg.AssetKey(["plex", "factlineas"]) in a.keys).specs))
    assert "refreshed every 4h (America/Argentina/Buenos_Aires)" in spec.description
    assert spec.metadata["refresh"] == "every 4h (America/Argentina/Buenos_Aires)"
    assert spec.metadata["freshness"] == "warning after 4h, failure after 9h"


def test_views_refresh_after_their_tables_and_have_freshness_policies():
    from plex_etl.definitions import defs

    assert VIEWS_SENSOR in {s.name for s in defs.sensors}
    views = [a for a in defs.assets if a.group_names_by_key.get(next(iter(a.keys))) == "views"]
    assert views
    for view in views:
        spec = next(iter(view.specs))
        assert spec.automation_condition is not None and spec.freshness_policy is not None, spec.key


def test_tables_have_freshness_policies(clock_assets):
    _catalog, plan = load_source_catalog("plex")
    policy = freshness_policy(plan.tables["factlineas"])
    assert policy.fail_window.to_timedelta() > policy.warn_window.to_timedelta() == dt.timedelta(hours=4)
    spec = next(a for a in clock_assets if dg.AssetKey(["plex", "factlineas"]) in a.keys).specs
    assert next(iter(spec)).freshness_policy is not None


def test_after_an_outage_each_tick_loads_every_missing_or_failed_day_of_the_gap_window():
    """Nothing loaded since Nov 10 (an outage of 17 days): the next tick loads the lookback and
    every missing day back to the gap window's start, not only the lookback."""
    assets = plex_assets(gap_fill_days=20)
    clock = Clock(assets, days(dt.date(2026, 11, 10), 30))
    clock.at(dt.datetime(2026, 11, 27, 3, 58, tzinfo=TZ))
    at_tick = clock.at(dt.datetime(2026, 11, 27, 4, 1, tzinfo=TZ))
    # 20 days back from Nov 27 is Nov 8; Nov 8-10 were loaded: Nov 11-27 are requested.
    assert at_tick["factlineas"] == days(dt.date(2026, 11, 27), 17)
    # Once requested, the gap is not requested again until the next tick.
    assert "factlineas" not in clock.at(dt.datetime(2026, 11, 27, 4, 3, tzinfo=TZ))
    # Once the gap is loaded, the next tick is back to the lookback.
    clock.loaded(assets, days(dt.date(2026, 11, 27), 17))
    clock.at(dt.datetime(2026, 11, 27, 7, 58, tzinfo=TZ))
    again = clock.at(dt.datetime(2026, 11, 27, 8, 1, tzinfo=TZ))
    assert again["factlineas"] == days(dt.date(2026, 11, 27), 3)


def test_no_tick_reloads_the_first_partition_which_holds_the_whole_history():
    """The first partition (Oct 1 on Nov 29: the month of the window's oldest day, Oct 30)
    loads every older row: no lookback, catch-up or gap window reaches it, even when it has
    never loaded (a full refresh or a repair loads it, on purpose). Nothing loaded: the tick's
    gap fill stops at the 30 days before the tick."""
    assets = plex_assets()
    factlineas = next(a for a in assets if dg.AssetKey(["plex", "factlineas"]) in a.keys)
    assert factlineas.partitions_def.get_first_partition_key() == "2026-10-01"
    assert len(factlineas.partitions_def.get_partition_keys(dt.datetime(2026, 11, 29, 12, tzinfo=TZ))) == 60
    clock = Clock(assets)
    clock.at(dt.datetime(2026, 11, 29, 3, 58, tzinfo=TZ))
    at_tick = clock.at(dt.datetime(2026, 11, 29, 4, 1, tzinfo=TZ))
    assert at_tick["factlineas"] == days(dt.date(2026, 11, 29), 30)  # Oct 31 - Nov 29
    assert "2026-10-01" not in set().union(*at_tick.values())


@pytest.mark.parametrize("change", [{"gap_fill_days": 31}, {"weekly_catchup_days": 40}, {"lookback_days": 31},
                                    {"tier_lookback_days": {"critical": 35}}])
def test_a_window_that_would_reach_the_history_is_refused_by_name(change):
    catalog, plan = load_source_catalog("plex")
    name = next(iter(change))
    with pytest.raises(PlanError, match=f"{name}.* must be between 1 and window_days - 1 \\(30\\)"):
        validate(replace(plan, **change), catalog)


def test_the_window_rolls_a_month_at_a_time_and_never_starts_before_first_day():
    _catalog, plan = load_source_catalog("plex")
    plan = replace(plan, first_day=dt.date(1986, 3, 1), window_days=31)
    assert plan.first_partition(dt.date(2026, 12, 31)) == dt.date(2026, 12, 1)  # 31 days back: Dec 1
    assert plan.first_partition(dt.date(2027, 1, 1)) == dt.date(2026, 12, 1)
    assert plan.first_partition(dt.date(2027, 1, 30)) == dt.date(2026, 12, 1)  # 61 partitions at most
    assert plan.first_partition(dt.date(2027, 1, 31)) == dt.date(2027, 1, 1)
    young = replace(plan, first_day=dt.date(2026, 12, 20))
    assert young.first_partition(dt.date(2027, 1, 5)) == dt.date(2026, 12, 20)


def test_reconciliation_runs_daily_at_its_own_time_and_never_rides_along_with_a_load():
    """The whole-table comparison reads every row's key on both sides: at 04:30 (source time)
    every table's check is requested, and only then. A check with its own automation condition
    does not ride along with the runs that load its table (Dagster builds automation runs with
    the other checks only), so a tier tick's loads run their blocking checks only."""
    from plex_etl.definitions import defs
    from plex_etl.defs.automation import RECONCILE_CRON
    from plex_etl.defs.checks import RECONCILE_CHECK

    assert RECONCILE_CRON == "30 4 * * *"

    checks = [c for c in defs.asset_checks if any(k.name == RECONCILE_CHECK for k in c.check_keys)]
    plex_checks = [c for c in checks if next(iter(c.check_keys)).asset_key.path[0] == "plex"]
    clock = Clock(plex_assets(), HISTORY)
    clock.defs = dg.Definitions(assets=clock.defs.assets, asset_checks=plex_checks, resources=defs.resources)

    def requested_checks(when: dt.datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=clock.defs, instance=clock.instance, evaluation_time=when, cursor=clock.cursor
        )
        clock.cursor = result.cursor
        return {f"{r.key.asset_key.path[-1]}:{r.key.name}" for r in result.results
                if isinstance(r.key, dg.AssetCheckKey) and r.true_subset.size}

    requested_checks(dt.datetime(2026, 11, 27, 3, 58, tzinfo=TZ))
    assert not requested_checks(dt.datetime(2026, 11, 27, 4, 1, tzinfo=TZ))  # the critical tier's tick
    graph = clock.defs.resolve_asset_graph()
    assert all(graph.get(k).automation_condition is not None for c in plex_checks for k in c.check_keys)
    at_reconcile = requested_checks(dt.datetime(2026, 11, 27, 4, 31, tzinfo=TZ))
    assert {f"{t}:{RECONCILE_CHECK}" for t in ("factlineas", "stock", "apppedidos")} <= at_reconcile
    assert not requested_checks(dt.datetime(2026, 11, 27, 4, 40, tzinfo=TZ))  # once a day
