"""Pins every non-public use of Dagster that plex_etl makes (plex_etl/defs/dagster_private.py):
a Dagster upgrade that changes one fails here, not in production."""

import dagster as dg

from plex_etl.defs import dagster_private


def test_the_run_tags_are_dagsters():
    from dagster._core.storage import tags

    assert dagster_private.AUTOMATION_RUN_TAG == tags.AUTOMATION_CONDITION_TAG
    assert dagster_private.BACKFILL_RUN_TAG == tags.BACKFILL_ID_TAG
    # What the asset daemon puts on the runs of a tick that evaluated conditions, and on a backfill's.
    assert dg.DagsterRun.tags_for_tick_id("7", has_evaluations=True)[dagster_private.AUTOMATION_RUN_TAG] == "true"
    assert dg.DagsterRun.tags_for_backfill_id("b1") == {dagster_private.BACKFILL_RUN_TAG: "b1"}


@dg.asset(check_specs=[dg.AssetCheckSpec("first", asset="pinned"), dg.AssetCheckSpec("second", asset="pinned")])
def pinned():
    yield dg.Output(1)
    yield dg.AssetCheckResult(check_name="second", passed=False)
    yield dg.AssetCheckResult(check_name="first", passed=True)


@dg.asset
def fails_with_a_failure() -> None:
    raise dg.Failure(description="plex/t: the description", allow_retries=False)


@dg.asset
def fails_with_an_error() -> None:
    raise ValueError("plex.t: column c: value 2 is no boolean")


def sqlite_instance(tmp_path) -> dg.DagsterInstance:
    (tmp_path / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {tmp_path}\n")
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_a_runs_records_come_in_completion_order_with_step_failures(tmp_path):
    with sqlite_instance(tmp_path) as instance:
        ok = dg.materialize([pinned], instance=instance)
        types = {dg.DagsterEventType.ASSET_CHECK_EVALUATION, dg.DagsterEventType.STEP_FAILURE}
        records = dagster_private.run_event_records(instance, ok.run_id, types)
        assert [r.event_log_entry.dagster_event.event_specific_data.check_name for r in records] == ["second", "first"]
        assert records == sorted(records, key=lambda r: r.storage_id)

        texts = []
        for asset in (fails_with_a_failure, fails_with_an_error):
            failed = dg.materialize([asset], instance=instance, raise_on_error=False)
            [record] = dagster_private.run_event_records(instance, failed.run_id, types)
            texts.append(dagster_private.step_failure_text(record.event_log_entry.dagster_event))
        assert texts == ["plex/t: the description", "ValueError: plex.t: column c: value 2 is no boolean"]


def test_freshness_changes_are_read_after_a_storage_id(tmp_path):
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    with sqlite_instance(tmp_path) as instance:
        assert dagster_private.freshness_changes(instance, None, 10) == []
        for old, new in ((FreshnessState.PASS, FreshnessState.WARN), (FreshnessState.WARN, FreshnessState.FAIL)):
            instance.report_runless_asset_event(FreshnessStateChange(
                key=dg.AssetKey(["plex", "stock"]), new_state=new, previous_state=old, state_change_timestamp=1.0))
        [latest] = dagster_private.freshness_changes(instance, None, 10)
        assert (latest.asset_key, latest.previous_state, latest.new_state) == (dg.AssetKey(["plex", "stock"]), "WARN",
                                                                               "FAIL")
        both = dagster_private.freshness_changes(instance, 0, 10)
        assert [(c.previous_state, c.new_state) for c in both] == [("PASS", "WARN"), ("WARN", "FAIL")]
        assert dagster_private.freshness_changes(instance, both[0].storage_id, 10) == [latest]


def test_a_pool_limit_is_what_the_cli_sets(tmp_path):
    with sqlite_instance(tmp_path) as instance:
        dagster_private.set_pool_limit(instance, "mysql_plex", 3)
        assert instance.event_log_storage.get_concurrency_info("mysql_plex").slot_count == 3


def test_a_runs_process_id_and_what_releasing_a_dead_run_does(tmp_path):
    import os

    with sqlite_instance(tmp_path) as instance:
        assert dagster_private.instance_on_this_machine(instance)
        done = dg.materialize([pinned], instance=instance)
        assert dagster_private.run_process_id(instance, done.run_id) == os.getpid()  # executed in this process

        run = instance.add_run(dg.DagsterRun(job_name="stands_for_a_killed_run", status=dg.DagsterRunStatus.STARTED))
        dagster_private.set_pool_limit(instance, "mysql_plex", 1)
        storage = instance.event_log_storage
        assert storage.claim_concurrency_slot("mysql_plex", run.run_id, "extraction").is_claimed
        dagster_private.fail_run(instance, run, "its process is gone")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert [e.message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)] == [
            "its process is gone"]
        dagster_private.free_run_slots(instance, run.run_id)
        assert storage.get_concurrency_info("mysql_plex").active_run_ids == set()
    assert dagster_private.instance_on_this_machine(dg.DagsterInstance.ephemeral())
