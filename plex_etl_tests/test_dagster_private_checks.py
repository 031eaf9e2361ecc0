"""Pins plex_etl/defs/dagster_private.py's reading of check evaluations on a real instance: a
Dagster upgrade that changes it fails here, not in the replication status."""

import datetime as dt

import dagster as dg

from plex_etl.defs.dagster_private import latest_check_outcomes

FAIL_NEXT = {"raise": False}


@dg.asset(check_specs=[dg.AssetCheckSpec("counted", asset="table"), dg.AssetCheckSpec("never_run", asset="table")])
def table(context: dg.AssetExecutionContext):
    if FAIL_NEXT["raise"]:
        raise RuntimeError("the load failed before its checks")
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name="counted", passed=False, severity=dg.AssetCheckSeverity.WARN,
                              description="3 rows missing", metadata={"days_differing": 2, "note": "two days"})


def test_latest_completed_evaluation_of_each_check():
    instance = dg.DagsterInstance.ephemeral()
    before = dt.datetime.now(dt.UTC)
    counted, never_run = dg.AssetCheckKey(dg.AssetKey("table"), "counted"), dg.AssetCheckKey(dg.AssetKey("table"),
                                                                                            "never_run")
    assert latest_check_outcomes(instance, [counted, never_run]) == {}
    # never_run is planned but not reported: the step fails, its record stays PLANNED
    assert not dg.materialize([table], instance=instance, raise_on_error=False).success

    outcomes = latest_check_outcomes(instance, [counted, never_run])
    assert list(outcomes) == [counted]  # planned, never evaluated: absent
    outcome = outcomes[counted]
    assert (outcome.passed, outcome.severity, outcome.description) == (False, "WARN", "3 rows missing")
    assert outcome.metadata == {"days_differing": 2, "note": "two days"}
    assert before - dt.timedelta(seconds=1) <= outcome.at <= dt.datetime.now(dt.UTC)

    # A later run that fails before its checks only plans them: the previous evaluation stays.
    FAIL_NEXT["raise"] = True
    try:
        dg.materialize([table], instance=instance, raise_on_error=False)
    finally:
        FAIL_NEXT["raise"] = False
    assert latest_check_outcomes(instance, [counted]) == {counted: outcome}
