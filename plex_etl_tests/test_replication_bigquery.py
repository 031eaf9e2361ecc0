"""The Dagster assets against BigQuery: the real google-cloud-bigquery client on a local emulator
(local-bigquery), definitions built from the environment (PLEX_ETL_WAREHOUSE=bigquery).

The local warehouse's tests (test_replication.py, test_fidelity.py, test_schema_evolution.py)
run here unchanged with a BigQuery environment: the same assertions hold on both warehouses.
On top: the asset checks' results, a failure injected into a Dagster run (not only into a
direct load) with no staging table left behind, the analytical views as written, and a JSON
number that BigQuery cannot hold exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from plex_etl.defs import assets
from plex_etl.mysql import create_engine
from plex_etl.warehouse.bigquery import STAGING_INFIX, BigQueryWarehouse
from plex_etl_tests import bq_emulator
from plex_etl_tests import test_fidelity as fidelity
from plex_etl_tests import test_replication as local
from plex_etl_tests import test_retries as retries
from plex_etl_tests import test_values as values
from plex_etl_tests.bq_emulator import Emulator, bigquery_emulator  # noqa: F401
from plex_etl_tests.conftest import TEST_DAYS
from plex_etl_tests.replication import build_defs, materialize, mysql_rows, point_at_test_databases, sorted_rows
from plex_etl_tests.test_completeness import scenario_every_row_exactly_once
from plex_etl_tests.test_schema_evolution import KEY, NAME, TABLE, scenario_schema_drift, scratch_source

pytestmark = pytest.mark.bigquery

DATASET = local.DATASET
# BigQuery calls of the assets give up after this long (the client's default is 600 s).
REQUEST_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def bq(bigquery_emulator: Emulator) -> BigQueryWarehouse:  # noqa: F811
    return bq_emulator.warehouse(bigquery_emulator)


@pytest.fixture(scope="module")
def env(bigquery_emulator: Emulator, bq: BigQueryWarehouse, demo_sources, demo_end_date):  # noqa: F811
    """test_replication.py's environment, with BigQuery as the warehouse."""
    with pytest.MonkeyPatch.context() as patch:
        point_at_test_databases(patch, demo_sources, bigquery_endpoint=bigquery_emulator.endpoint,
                                project=bigquery_emulator.project, dataset=DATASET)
        yield {
            "defs": build_defs(request_timeout_seconds=REQUEST_TIMEOUT),
            "warehouse": bq,
            "plex": create_engine(demo_sources["plex"]),
            "source": demo_sources["plex"],
            "day": demo_end_date - dt.timedelta(days=2),
            "today": demo_end_date,
        }


def staging_tables(bq: BigQueryWarehouse) -> list[str]:
    return sorted(t.table_id for t in bq.client.list_tables(f"{bq.project}.{DATASET}") if STAGING_INFIX in t.table_id)


def test_event_child_and_grandchild_partitions_equal_mysql(env):
    """Event, child and two-level child partitions equal MySQL; both asset checks pass."""
    local.test_event_child_and_grandchild_partitions_equal_mysql(env)
    result = materialize(env["defs"], ["plex/factcabecera"], env["day"])
    assert local.checks_passed(result) == {
        "plex/factcabecera:schema_matches_catalog": True, "plex/factcabecera:row_count_matches_mysql": True
    }
    metadata = result.asset_materializations_for_node("plex__factcabecera")[0].metadata
    assert metadata["warehouse"].value == "bigquery"
    assert metadata["warehouse_table"].value == f"{DATASET}.plex_factcabecera"


def test_rematerializing_a_partition_leaves_identical_content(env):
    local.test_rematerializing_a_partition_leaves_identical_content(env)


def test_upsert_never_duplicates_a_key(env):
    local.test_upsert_never_duplicates_a_key(env)


def test_date_range_is_one_run_with_one_materialization_per_day(env):
    local.test_date_range_is_one_run_with_one_materialization_per_day(env)


def test_snapshot_asset_is_unpartitioned_and_lands_as_todays_snapshot(env):
    local.test_snapshot_asset_is_unpartitioned_and_lands_as_todays_snapshot(env)


@pytest.mark.parametrize("fail_after", ["first", "middle", "last"])
def test_failure_after_chunk_k_leaves_the_target_untouched(env, fail_after, monkeypatch):
    """Through the warehouse (the local test) and through a Dagster run: a stream failing after
    chunk k of 40 rows leaves the table exactly as it was and no staging table behind."""
    local.test_failure_after_chunk_k_leaves_the_target_untouched(env, fail_after)
    assert staging_tables(env["warehouse"]) == []

    day, chunk_rows = env["day"], 40
    chunks = -(-local.warehouse_count(env, "factlineas", day) // chunk_rows)
    assert chunks >= 3
    k = {"first": 1, "middle": chunks // 2, "last": chunks}[fail_after]
    original = assets.live_spec

    def small_chunks(*args, **kwargs):
        spec = original(*args, **kwargs)
        return replace(spec, plan=replace(spec.plan, chunk_rows=chunk_rows))

    class FailingStream(assets.PartitionStream):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__(), start=1):
                yield batch
                if i == k:
                    raise RuntimeError(f"injected failure after chunk {k}")

    monkeypatch.setattr(assets, "live_spec", small_chunks)
    monkeypatch.setattr(assets, "PartitionStream", FailingStream)
    sql = f"SELECT * FROM {DATASET}.plex_factlineas"
    before = sorted_rows(env["warehouse"].query(sql), drop=())
    failed = materialize(env["defs"], ["plex/factlineas"], day, raise_on_error=False)
    assert not failed.success and not failed.asset_materializations_for_node("plex__factlineas")
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"injected failure after chunk {k}" in str(failure.event_specific_data.error.to_string())
    assert sorted_rows(env["warehouse"].query(sql), drop=()) == before
    assert staging_tables(env["warehouse"]) == []


def test_views_are_created_and_agree_with_mysql(env):
    """The analytical views (BigQuery SQL as written, untranslated) over one loaded day."""
    day, today, plex = env["day"], env["today"], env["plex"]
    dated = ["factcabecera", "factlineas", "factpagos", "factcoberturas", "reccabecera", "reclineas"]
    assert materialize(env["defs"], [f"plex/{t}" for t in dated], day).success
    assert materialize(env["defs"], ["plex/medicamentos", "plex/stock", "plex/stocklotes"], today).success
    views = sorted(k.to_user_string() for a in env["defs"].assets for k in a.keys if k.path[0] == "views")
    assert len(views) == 4
    result = materialize(env["defs"], views, None)
    assert result.success
    bq = env["warehouse"]
    for view in views:
        rows = result.asset_materializations_for_node(view.replace("/", "__"))[0].metadata["dagster/row_count"].value
        name = view.split("/")[1]
        assert rows == bq.query(f"SELECT COUNT(*) AS n FROM {DATASET}.{name}").to_pylist()[0]["n"] > 0, view

    facturas = bq.query(
        f"SELECT COUNT(*) AS n, SUM(lineas) AS lineas, SUM(pagos) AS pagos FROM {DATASET}.v_facturas_consolidated "
        f"WHERE _etl_partition_date = DATE '{day}'"
    ).to_pylist()[0]
    window = f"c.Emision >= '{day}' AND c.Emision < '{day + dt.timedelta(days=1)}'"
    mysql = mysql_rows(
        plex,
        f"SELECT COUNT(*), (SELECT COUNT(*) FROM factlineas l JOIN factcabecera c USING (IDComprobante) "
        f"WHERE {window}), (SELECT COUNT(*) FROM factpagos p JOIN factcabecera c USING (IDComprobante) "
        f"WHERE {window}) FROM factcabecera c WHERE {window}",
    )[0]
    assert (facturas["n"], facturas["lineas"], facturas["pagos"]) == mysql
    stock = bq.query(f"SELECT COUNT(*) AS n, SUM(Cantidad) AS q FROM {DATASET}.v_inventory_status").to_pylist()[0]
    assert (stock["n"], stock["q"]) == mysql_rows(plex, "SELECT COUNT(*), SUM(Cantidad) FROM stock")[0]


@pytest.fixture(scope="module")
def quantio(env, demo_sources):
    """Every quantio table replicated into BigQuery: dated ones for the whole demo window (one run
    per strategy group), snapshots for today; every asset check passed."""
    start = env["today"] - dt.timedelta(days=TEST_DAYS + 5)
    fidelity.replicate(env["defs"], ("quantio",), start, env["today"])
    return {"engine": create_engine(demo_sources["quantio"]), "start": start, "today": env["today"]}


def test_every_quantio_column_agrees_with_mysql(env, quantio):
    problems = fidelity.source_problems(quantio["engine"], env["warehouse"], "quantio", quantio["start"],
                                        quantio["today"])
    assert not problems, "\n".join(problems)


def test_schema_drift_flows_on_bigquery(env, monkeypatch, tmp_path):
    """A column added in MySQL lands at the next load, a dropped one keeps its history across a
    reload, a renamed table fails its load by name (test_schema_evolution.py)."""
    scenario_schema_drift(env["warehouse"], monkeypatch, tmp_path)


def test_every_row_lands_exactly_once_on_bigquery(env, monkeypatch, tmp_path):
    """Undated, old and future rows load; moved rows move; a hard delete turns the
    reconciliation check red and reloading the partitions it names repairs it."""
    monkeypatch.setenv("PLEX_ETL_DATASET", "complete")
    scenario_every_row_exactly_once(env["warehouse"], "complete", monkeypatch, tmp_path).drop()


def test_a_value_bigquery_cannot_hold_fails_once_and_stays_with_its_table(env, monkeypatch, tmp_path):
    """test_retries.py's scenario on BigQuery, with a DECIMAL(65,30) extreme beside the boolean
    that holds a 2: each failing table fails its step once (no 30 s + 90 s of retries), leaves no
    empty table, and the healthy table's load, checks and reconciliation go on."""
    extreme = "9" * 35 + "." + "9" * 30
    day = retries.DAY
    montos = ("CREATE TABLE montos (IdMonto INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, "
              "Valor DECIMAL(65,30));\n"
              f"INSERT INTO montos VALUES (1, '{day} 09:00:00', {extreme}), (2, '{day} 10:00:00', -{extreme})")
    retries.scenario_a_conversion_error_stays_with_its_table(env["warehouse"], monkeypatch, tmp_path,
                                                             extra_broken={"montos": montos})


def test_every_value_edit_is_found_and_repaired_on_bigquery(env, kinds, monkeypatch):
    """test_values.py's scenario: one old value of each type family edited in MySQL is found,
    named (key, column, both values) and repaired by reloading its day."""
    monkeypatch.setenv("PLEX_ETL_DATASET", "values_bq")
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(kinds.config))

    def repair(defs) -> None:
        assert materialize(defs, [values.KINDS, values.NOKEY], values.OLD).success

    values.scenario_value_edits(env["warehouse"], "values_bq", kinds, repair)


def test_json_number_beyond_float64_does_not_fail_the_load(env, monkeypatch, tmp_path):
    """MySQL accepts any JSON number; BigQuery's PARSE_JSON fails on one it cannot hold exactly
    unless told to round. One such document must not block the table's load."""
    dataset = "scratch_json"
    monkeypatch.setenv("PLEX_ETL_DATASET", dataset)
    day = dt.date.today() - dt.timedelta(days=10)  # inside the rolling window of daily partitions
    scratch = scratch_source(
        monkeypatch, tmp_path, "json",
        f"CREATE TABLE {TABLE} (IdVenta INT NOT NULL PRIMARY KEY, Fecha DATETIME NOT NULL, Datos JSON)",
        f"INSERT INTO {TABLE} VALUES (1, '{day} 09:00:00', '{{\"n\": 12345678901234567890123}}'), "
        f"(2, '{day} 10:00:00', '{{\"n\": 1.5, \"s\": \"ñ\"}}'), (3, '{day} 11:00:00', NULL)",
    )
    result = materialize(build_defs(request_timeout_seconds=REQUEST_TIMEOUT), [KEY], day)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    rows = env["warehouse"].query(
        f"SELECT IdVenta, JSON_VALUE(Datos, '$.n') AS n, JSON_VALUE(Datos, '$.s') AS s FROM {dataset}.{NAME}"
    ).to_pylist()
    values = {r["IdVenta"]: (r["n"] and float(r["n"]), r["s"]) for r in rows}
    # Real BigQuery keeps the nearest float64 (1.2345678901234568e+22); the emulator keeps the text.
    assert values == {1: (12345678901234567890123.0, None), 2: (1.5, "ñ"), 3: (None, None)}
    scratch.drop()


def test_request_timeout_setting_shortens_retries_and_defaults_stay(bigquery_emulator):  # noqa: F811
    from plex_etl.defs.resources import WarehouseResource

    settings = {"kind": "bigquery", "project": bigquery_emulator.project, "api_endpoint": bigquery_emulator.endpoint}
    short = WarehouseResource(**settings, request_timeout_seconds=7).get()
    assert short.retry.timeout == 7 and short.job_retry.timeout == 7 and short.job_timeout == 7
    default = WarehouseResource(**settings).get()
    assert default.retry.timeout == 300 and default.job_retry.timeout == 300 and default.job_timeout == 300
    client_defaults = WarehouseResource(**settings, request_timeout_seconds=None).get()
    assert client_defaults.retry.timeout == 600 and client_defaults.job_timeout is None


def test_an_existing_dataset_is_not_created_again(bq, monkeypatch):
    """Creating needs project-level permission that a loader granted on its dataset lacks."""
    bq._ensure_dataset("plex_existing")
    monkeypatch.setattr(bq.client, "create_dataset", lambda *args, **kwargs: pytest.fail("create_dataset called"))
    bq._ensure_dataset("plex_existing")
