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
