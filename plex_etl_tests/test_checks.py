"""Every failure path of the blocking checks, on the real local warehouse and a real Dagster run:
missing and retyped columns (strict types), retired ones (passing, named), a row-count mismatch,
and a failing blocking check that stops the views downstream."""

import datetime as dt

import dagster as dg
import duckdb
import pytest

from plex_etl.catalog.store import load_source_catalog
from plex_etl.defs.checks import ROW_COUNT_CHECK, SCHEMA_CHECK, schema_check
from plex_etl.extract.spec import replicated_table
from plex_etl.warehouse.local import LocalWarehouse, normalize_type
from plex_etl_tests.replication import build_defs, materialize, point_at_test_databases, table_checks

DATASET = "plex_analytics"


@pytest.fixture
def env(demo_sources, demo_end_date, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        point_at_test_databases(patch, demo_sources, warehouse)
        yield {"defs": build_defs(), "warehouse": LocalWarehouse(warehouse), "path": warehouse,
               "day": demo_end_date - dt.timedelta(days=1)}


def alter(env, *statements: str) -> None:
    with duckdb.connect(str(env["path"])) as con:
        for sql in statements:
            con.execute(sql)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_each_warehouse_has_one_strict_type_normaliser():
    from plex_etl.warehouse.bigquery import normalize_type as bigquery_normalize

    assert normalize_type("int8") == normalize_type("BIGINT") == "BIGINT"
    assert normalize_type("INTEGER") != normalize_type("BIGINT")
    assert normalize_type("FLOAT") != normalize_type("DOUBLE")
    assert normalize_type("decimal(20, 0)") == "DECIMAL(20,0)"
    assert normalize_type("TIMESTAMPTZ") == "TIMESTAMP WITH TIME ZONE"
    assert bigquery_normalize("integer") == bigquery_normalize("INT64") == "INT64"
    assert bigquery_normalize("NUMERIC(20,0)") == "NUMERIC(20, 0)"


def test_schema_check_names_missing_retired_and_retyped_columns(env):
    assert materialize(env["defs"], ["plex/factcabecera"], env["day"]).success
    catalog, plan = load_source_catalog("plex")
    spec = replicated_table(catalog, plan, "factcabecera")
    bigint = next(c.name for c in spec.target.columns if normalize_type(c.local_type) == "BIGINT")
    double = next((c.name for c in spec.target.columns if normalize_type(c.local_type) == "DOUBLE"), None)
    dropped = next(c.name for c in spec.target.columns if c.name not in (bigint, double, *spec.target.primary_key))
    table = f"{DATASET}.plex_factcabecera"
    alter(env, f'ALTER TABLE {table} DROP COLUMN "{dropped}"', f"ALTER TABLE {table} ADD COLUMN gone_in_mysql INTEGER",
          f'ALTER TABLE {table} ALTER COLUMN "{bigint}" TYPE INTEGER',
          *([f'ALTER TABLE {table} ALTER COLUMN "{double}" TYPE FLOAT'] if double else []))
    result = schema_check(env["warehouse"], spec, dg.AssetKey(["plex", "factcabecera"]))
    assert not result.passed
    assert f"missing columns: {dropped}" in result.description
    assert "retired (not written by loads any more, history kept): gone_in_mysql" in result.description
    assert f"{bigint}: INTEGER (expected BIGINT)" in result.description  # strict: INTEGER is not BIGINT
    if double:
        assert f"{double}: FLOAT (expected DOUBLE)" in result.description
    assert result.metadata["missing_columns"].value == 1 and result.metadata["retired_columns"].text == "gone_in_mysql"
    assert result.severity == dg.AssetCheckSeverity.ERROR


def test_row_count_check_fails_when_the_warehouse_lost_rows(env):
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(env["defs"], ["plex/factcabecera"], env["day"], instance=instance).success
    alter(env, f"DELETE FROM {DATASET}.plex_factcabecera WHERE rowid IN "
               f"(SELECT rowid FROM {DATASET}.plex_factcabecera LIMIT 2)")
    key = dg.AssetKey(["plex", "factcabecera"])
    result = dg.materialize(  # a checks-only run: the figures come from the last materialization
        [*env["defs"].assets, *table_checks(env["defs"])],
        selection=dg.AssetSelection.checks_for_assets(key),
        resources=env["defs"].resources, instance=instance, raise_on_error=False,
    )
    check = evaluations(result)[f"plex/factcabecera:{ROW_COUNT_CHECK}"]
    assert not check.passed and check.metadata["difference"].value == -2
    assert f"{env['day']}: MySQL" in check.description
    assert evaluations(result)[f"plex/factcabecera:{SCHEMA_CHECK}"].passed


def test_a_failing_blocking_check_stops_the_views(env, monkeypatch):
    snapshots = ["plex/medicamentos", "plex/stock", "plex/stocklotes"]
    assert materialize(env["defs"], snapshots, None).success
    # A column of the catalog that vanishes from the warehouse table right after its load (a
    # concurrent hand change): the load succeeds, its blocking schema check fails.
    load = LocalWarehouse.load

    def load_then_lose_a_column(self, target, *args, **kwargs):
        result = load(self, target, *args, **kwargs)
        if target.name == "plex_stock":
            alter(env, f'ALTER TABLE {DATASET}.plex_stock DROP COLUMN "{target.columns[-1].name}"')
        return result

    monkeypatch.setattr(LocalWarehouse, "load", load_then_lose_a_column)
    result = materialize(env["defs"], [*snapshots, "views/v_inventory_status"], None, raise_on_error=False)
    checks = evaluations(result)
    assert not checks[f"plex/stock:{SCHEMA_CHECK}"].passed
    assert "missing columns" in checks[f"plex/stock:{SCHEMA_CHECK}"].description
    assert checks[f"plex/medicamentos:{SCHEMA_CHECK}"].passed
    assert not result.success
    assert result.asset_materializations_for_node("plex__stock")  # the load itself succeeded
    assert not result.asset_materializations_for_node("views__v_inventory_status")
    assert env["warehouse"].columns(DATASET, "v_inventory_status") is None


def test_a_column_dropped_in_mysql_is_retired_not_a_failure(env):
    """After `discover` drops a column from the catalog, the warehouse keeps it with its history:
    the schema check passes and names it, and reloading the day keeps each row's value."""
    day = env["day"]
    assert materialize(env["defs"], ["plex/factcabecera"], day).success
    alter(env, f"ALTER TABLE {DATASET}.plex_factcabecera ADD COLUMN dropped_in_mysql INTEGER",
          f"UPDATE {DATASET}.plex_factcabecera SET dropped_in_mysql = 7")  # its history
    rows = env["warehouse"].count_by_partition(DATASET, "plex_factcabecera", day, day)[day]
    result = materialize(env["defs"], ["plex/factcabecera"], day)
    check = evaluations(result)[f"plex/factcabecera:{SCHEMA_CHECK}"]
    assert check.passed and "retired (not written by loads any more, history kept): dropped_in_mysql" in (
        check.description)
    assert check.metadata["retired_columns"].text == "dropped_in_mysql"
    kept = env["warehouse"].query(f"SELECT COUNT(dropped_in_mysql) AS n FROM {DATASET}.plex_factcabecera "
                                  f"WHERE _etl_partition_date = DATE '{day}'").column(0)[0].as_py()
    assert kept == rows > 0


def test_the_reconciliation_runs_on_its_own_never_riding_along_with_a_load():
    """Which runs evaluate `warehouse_equals_mysql` (the CLI's own run is in test_replication)."""
    from plex_etl.defs.checks import RECONCILE_CHECK, rides_along
    from plex_etl.defs.dagster_private import AUTOMATION_RUN_TAG, BACKFILL_RUN_TAG

    table = dg.AssetKey(["plex", "pedidos"])
    check = dg.AssetCheckKey(table, RECONCILE_CHECK)
    every_check = frozenset({check, dg.AssetCheckKey(table, ROW_COUNT_CHECK), dg.AssetCheckKey(table, SCHEMA_CHECK)})
    automation = {AUTOMATION_RUN_TAG: "true"}

    def run(assets, checks, tags=None) -> dg.DagsterRun:
        return dg.DagsterRun(job_name="__ASSET_JOB", asset_selection=assets, asset_check_selection=checks,
                             tags=tags or {})

    loads = {
        "dagster asset materialize": run(frozenset({table}), None),
        "the UI's Materialize": run(frozenset({table}), every_check),
        "a UI backfill's run": run(frozenset({table}), every_check, {BACKFILL_RUN_TAG: "b1"}),
        "a tier tick's backfill run": run(frozenset({table}), every_check, {**automation, BACKFILL_RUN_TAG: "b2"}),
        "a tier tick's run": run(frozenset({table}), frozenset({dg.AssetCheckKey(table, ROW_COUNT_CHECK)}), automation),
    }
    on_its_own = {
        "its daily condition": run(None, frozenset({check}), automation),
        "its condition, due with its table's load": run(frozenset({table}), every_check, automation),
        "the job plex_reconciliation": dg.DagsterRun(job_name="plex_reconciliation"),
        "the Checks tab": run(frozenset(), frozenset({check})),
    }
    assert {name: rides_along(r, check) for name, r in loads.items()} == dict.fromkeys(loads, True)
    assert {name: rides_along(r, check) for name, r in on_its_own.items()} == dict.fromkeys(on_its_own, False)
