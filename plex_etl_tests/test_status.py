"""The replication's status, table by table: `plex-etl status`, the asset
plex_etl/replication_status and the sensor that refreshes it, on a real Dagster instance after
real loads of the test databases (the browser test shows the asset in the UI)."""

import datetime as dt
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from plex_etl.catalog.plan import TIERS
from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.checks import RECONCILE_CHECK, ROW_COUNT_CHECK, SCHEMA_CHECK
from plex_etl.defs.status import STATUS_KEY, STATUS_SENSOR, gather
from plex_etl.status import CheckOutcome, LastLoad, StatusTable, next_tick, table_status, text_report
from plex_etl_tests.conftest import REPO
from plex_etl_tests.replication import build_defs, load_like_the_demo, point_at_test_databases

UTC = dt.UTC
BA = "America/Argentina/Buenos_Aires"  # UTC-3, no daylight saving time
NOW = dt.datetime(2026, 12, 4, 14, 17, tzinfo=UTC)  # a Friday, 11:17 in Buenos Aires


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A time of December 2026 in Buenos Aires, as UTC."""
    return dt.datetime(2026, 12, day, hour + 3, minute, tzinfo=UTC) if hour + 3 < 24 else \
        dt.datetime(2026, 12, day + 1, hour + 3 - 24, minute, tzinfo=UTC)


def test_next_refresh_is_the_next_tick_of_each_tier_in_its_time_zone():
    expected = {
        "critical": at(4, 12), "high": at(4, 12), "standard": at(4, 16), "app_orders": at(4, 12),
        "master_daily": at(5, 6), "master_weekly": at(6, 3),  # Sunday 03:00
    }
    assert {tier: next_tick(cron, BA, NOW) for tier, cron in TIERS.items()} == expected
    assert next_tick(TIERS["critical"], BA, at(4, 12)) == at(4, 16)  # strictly after a tick
    assert next_tick(TIERS["critical"], BA, at(4, 21)) == at(5, 0)  # across midnight
    assert next_tick(TIERS["master_weekly"], BA, at(6, 3)) == at(13, 3)
    with pytest.raises(ValueError, match="only minute, hour and weekday"):
        next_tick("0 6 1 * *", BA, NOW)


def table(**changes) -> StatusTable:
    fields = dict(source="plex", table="factcabecera", asset_key="plex/factcabecera", strategy="event",
                  tier="high", captured=False, warn_after=dt.timedelta(hours=6), fail_after=dt.timedelta(hours=13),
                  cron=TIERS["high"], time_zone=BA,
                  checks=(SCHEMA_CHECK, ROW_COUNT_CHECK, "no_orphans_FK_FactCabecera_Clientes", RECONCILE_CHECK))
    return StatusTable(**{**fields, **changes})


def outcome(passed: bool, severity: str = "ERROR", hours_ago: float = 1, **metadata) -> CheckOutcome:
    return CheckOutcome(passed, severity, "" if passed else "it failed", metadata,
                        NOW - dt.timedelta(hours=hours_ago))


def test_state_from_freshness_checks_and_reconciliation():
    load = LastLoad(at=NOW - dt.timedelta(hours=2), rows=1234, days="2026-12-02 to 2026-12-04")
    fine = table_status(table(), load, {SCHEMA_CHECK: outcome(True), RECONCILE_CHECK: outcome(True, hours_ago=7)}, NOW)
    assert (fine.state, fine.freshness, fine.failing_checks) == ("OK", "OK", ())
    assert fine.reconciliation == "equal"
    assert fine.next_refresh == at(4, 12) and fine.reasons == ()

    late = table_status(table(), LastLoad(NOW - dt.timedelta(hours=7), 5, None), {}, NOW)
    assert (late.state, late.freshness, late.reconciliation) == ("WARN", "WARN", "not run yet")
    assert late.reasons == ("last load 7h 00m ago, over 6h",)
    stale = table_status(table(), LastLoad(NOW - dt.timedelta(hours=14), 5, None), {}, NOW)
    assert (stale.state, stale.reasons) == ("FAIL", ("last load 14h 00m ago, over 13h",))
    never = table_status(table(), None, {}, NOW)
    assert (never.state, never.freshness, never.reasons) == ("FAIL", "never loaded", ("never loaded",))

    checks = {
        "no_orphans_FK_FactCabecera_Clientes": outcome(False, "WARN"),
        RECONCILE_CHECK: outcome(False, "WARN", days_differing=2),
        "a_check_of_another_table": outcome(False),  # not this table's: ignored
    }
    warned = table_status(table(), load, checks, NOW)
    assert warned.state == "WARN"
    assert warned.reconciliation == "2 days differ (lookback)"
    assert warned.failing_checks == ("no_orphans_FK_FactCabecera_Clientes (WARN)",)  # reconciliation has its column
    assert warned.reasons == ("no_orphans_FK_FactCabecera_Clientes failed (WARN, 1h 00m ago): it failed",
                              "warehouse_equals_mysql failed (WARN, 1h 00m ago): it failed")
    broken = table_status(table(), load, {ROW_COUNT_CHECK: outcome(False), RECONCILE_CHECK: outcome(
        False, days_differing=1)}, NOW)
    assert broken.state == "FAIL" and broken.reconciliation == "1 day differs"
    assert broken.failing_checks == ("row_count_matches_mysql (ERROR)",)
    cannot = table_status(table(), load, {RECONCILE_CHECK: CheckOutcome(False, "ERROR", "MySQL unreachable\nmore",
                                                                        {}, NOW)}, NOW)
    assert cannot.reconciliation == "failed: MySQL unreachable"

    captured = table_status(table(captured=True, cron=None, warn_after=dt.timedelta(minutes=30)),
                            LastLoad(NOW - dt.timedelta(minutes=2), None, None, lag_seconds=3.25), {}, NOW)
    assert captured.state == "OK" and captured.next_refresh is None

    report = text_report([fine, broken, captured, late])
    lines = report.splitlines()
    assert lines[0].split() == ["TABLE", "STATE", "FRESHNESS", "LAST", "LOAD", "ROWS", "RECONCILIATION", "FAILING",
                                "CHECKS", "NEXT", "REFRESH", "STRATEGY", "TIER", "LAG", "(S)"]
    assert [line.split()[1] for line in lines[1:5]] == ["FAIL", "WARN", "OK", "OK"]  # worst first
    # Fresh, its last load at 09:17 with 1,234 rows, 1 day differs, a failing check, the next tick of its tier.
    assert lines[1].split() == ["plex.factcabecera", "FAIL", "OK", "Dec", "04", "09:17", "1,234", "1", "day",
                                "differs", "row_count_matches_mysql", "(ERROR)", "Dec", "04", "12:00", "event", "high"]
    assert lines[2].split()[:4] == ["plex.factcabecera", "WARN", "WARN:", "7h"]
    assert lines[4].split()[-4:] == ["captured", "event", "high", "3.2"]
    assert f"4 tables: 2 OK, 1 WARN, 1 FAIL (times in {BA})" in report
    assert ("  plex.factcabecera: row_count_matches_mysql failed (ERROR, 1h 00m ago): it failed; "
            "warehouse_equals_mysql failed (ERROR, 1h 00m ago): it failed") in report


@pytest.fixture
def loaded_instance(demo_sources, demo_end_date, tmp_path, monkeypatch):
    """quantio's last 7 days and snapshots loaded into a persistent instance of a temporary
    DAGSTER_HOME, its reconciliation checks run (the older days are missing: they fail)."""
    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    defs = build_defs()
    _, plan = load_source_catalog("quantio")
    with dg.DagsterInstance.get() as instance:
        load_like_the_demo(defs, instance, ("quantio",), demo_end_date)
        yield defs, instance, plan


def test_status_in_the_cli_the_asset_and_the_sensor(loaded_instance):
    defs, instance, plan = loaded_instance
    tables = sorted(p.table for p in plan.included)

    # The CLI, as an operator runs it.
    done = subprocess.run([sys.executable, "-m", "plex_etl.cli", "status", "--source", "quantio"],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ))
    assert done.returncode == 1, done.stdout + done.stderr  # reconciliation ERROR: the older days are missing
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.startswith("quantio.")}
    assert sorted(lines) == [f"quantio.{t}" for t in tables]
    dated = {p.table for p in plan.included if p.strategy != "snapshot"}
    for table, line in lines.items():
        assert "never" not in line and "captured" not in line, line  # loaded; refreshed by its tier
        if table.split(".")[1] in dated:  # the older days are missing in the warehouse
            assert " FAIL " in line and ("days differ" in line or "day differs" in line), line
        else:  # the latest snapshot is what MySQL holds
            assert " OK " in line and " equal " in line, line
    ok = len(tables) - len(dated)
    assert f"{len(tables)} tables: {ok} OK, 0 WARN, {len(dated)} FAIL" in done.stdout
    assert "quantio.plex_pedidos: warehouse_equals_mysql failed (ERROR, " in done.stdout

    # The asset, materialized from the UI or the CLI: its metadata carries every table of both sources.
    result = dg.materialize([a for a in defs.assets if STATUS_KEY in a.keys], instance=instance)
    (materialization,) = result.asset_materializations_for_node(STATUS_KEY.to_python_identifier())
    records = [r.data for r in materialization.metadata["tables"].value.records]
    by_name = {r["table"]: r for r in records}
    _, plex_plan = load_source_catalog("plex")
    assert len(records) == len(tables) + len(plex_plan.included)
    assert by_name["plex.factcabecera"]["last_load"] == "never" and by_name["plex.factcabecera"]["state"] == "FAIL"
    pedidos = by_name["quantio.plex_pedidos"]
    assert isinstance(pedidos["rows"], int) and by_name["quantio.stocklotes"]["rows"] > 0
    assert pedidos["freshness"] == "OK" and "differ" in pedidos["reconciliation"]
    assert pedidos["failing_checks"] == "" and pedidos["capture_lag_seconds"] is None
    assert materialization.metadata["tables_fail"].value == len(records) - ok
    assert materialization.metadata["tables_ok"].value == ok
    assert "quantio.plex_pedidos" in materialization.metadata["problems"].value

    # The sensor reports the same without a run.
    sensor = next(s for s in defs.sensors if s.name == STATUS_SENSOR)
    reported = sensor(dg.build_sensor_context(instance=instance))
    (event,) = reported.asset_events
    assert event.asset_key == STATUS_KEY and event.description.startswith(f"{len(records)} tables: {ok} OK")
    assert reported.skip_reason.skip_message.startswith("reported plex_etl/replication_status: ")
    assert len(event.metadata["tables"].value.records) == len(records)

    # A table kept current by change capture: the lag of its latest report, no tier refresh.
    key = dg.AssetKey(["quantio", "productos"])
    today = dt.datetime.now(ZoneInfo(BA)).date().isoformat()
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=today, metadata={
        "lag_seconds": dg.FloatMetadataValue(2.75), "rows_merged": 4}))
    captured = StatusTable(source="quantio", table="productos", asset_key="quantio/productos", strategy="upsert",
                           tier="master_daily", captured=True, warn_after=dt.timedelta(minutes=30),
                           fail_after=dt.timedelta(hours=1), cron=None, time_zone=BA, checks=())
    (status,) = gather(instance, [captured], dt.datetime.now(UTC))
    assert (status.state, status.last_load.lag_seconds, status.last_load.rows, status.next_refresh) == (
        "OK", 2.75, 4, None)
