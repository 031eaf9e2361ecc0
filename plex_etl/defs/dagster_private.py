"""Every use of Dagster that its public API does not cover, in one place.

plex_etl otherwise uses only what Dagster documents as public (exported from `dagster` and, for
methods, marked public in its API reference). Each entry below says what it needs and why no
public API does it in Dagster 1.13; plex_etl_tests/test_dagster_private.py pins each one's
behaviour, so a Dagster upgrade that changes it fails that test rather than production.
"""

# Run tags Dagster sets and exports no constant for (dagster._core.storage.tags): every run a
# declarative-automation tick launches, directly or through a backfill, carries
# AUTOMATION_RUN_TAG = "true"; every run of a backfill carries BACKFILL_RUN_TAG = its id. The
# whole-table reconciliation check tells by them a run its own condition requested (now and then
# with its table's load, when both are due in one tick) from a load that selects every check of
# its tables: the CLI, the UI's Materialize, any backfill's runs (defs/checks.py, rides_along).
AUTOMATION_RUN_TAG = "dagster/from_automation_condition"
BACKFILL_RUN_TAG = "dagster/backfill"
