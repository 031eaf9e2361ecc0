"""The BigQuery warehouse, through the real google-cloud-bigquery client, against a local
emulator (local-bigquery) started once per session: shared scenarios plus BigQuery-only
behaviour (table layout, client construction, a known emulator limitation).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest

from plex_etl.warehouse import TargetTable, WarehouseColumn, WarehouseError
from plex_etl.warehouse.bigquery import (
    STAGING_INFIX,
    BigQueryWarehouse,
    bigquery_client,
    check_staged_rows,
    field_type,
    normalize_type,
)
from plex_etl_tests import bq_emulator
from plex_etl_tests import warehouse_scenarios as sc
from plex_etl_tests.bq_emulator import Emulator, bigquery_emulator  # noqa: F401

pytestmark = pytest.mark.bigquery


@pytest.fixture(scope="module")
def warehouse(bigquery_emulator: Emulator) -> BigQueryWarehouse:  # noqa: F811
    return bq_emulator.warehouse(bigquery_emulator)


@pytest.fixture
def harness(warehouse: BigQueryWarehouse) -> sc.Harness:
    dataset = f"plex_test_{uuid.uuid4().hex[:8]}"

    def leftovers() -> list[str]:
        tables = warehouse.client.list_tables(f"{warehouse.project}.{dataset}")
        return sorted(t.table_id for t in tables if STAGING_INFIX in t.table_id)

    return sc.Harness(
        wh=warehouse,
        dataset=dataset,
        staging_leftovers=leftovers,
        # The emulator stores BIGNUMERIC as DuckDB DECIMAL(38,18): round-trip a value with
        # 20 integer digits (staged as text, CAST in the swap). The 40-digit BIGNUMERIC(50, 10)
        # value is covered by the local warehouse (see test_decimal_extremes).
        bignumeric_value=Decimal("12345678901234567890.0123456789"),
    )


@pytest.mark.parametrize("scenario", sc.SCENARIOS, ids=lambda f: f.__name__.removeprefix("scenario_"))
def test_scenario(harness: sc.Harness, scenario) -> None:
    scenario(harness)


def test_table_layout(harness: sc.Harness, warehouse: BigQueryWarehouse) -> None:
    """DAY partitioning on _etl_partition_date, clustering by the clusterable key prefix
    (at most 4 columns), description, dataset location, required partition column."""
    cols = (
        WarehouseColumn("a", pa.int64(), "INT64", "BIGINT"),
        WarehouseColumn("b", pa.string(), "STRING", "VARCHAR"),
        WarehouseColumn("c", pa.date32(), "DATE", "DATE"),
        WarehouseColumn("d", pa.decimal128(20, 0), "NUMERIC(20, 0)", "DECIMAL(20,0)"),
        WarehouseColumn("e", pa.int64(), "INT64", "BIGINT"),
        WarehouseColumn("f", pa.float64(), "FLOAT64", "DOUBLE"),
    )
    t = TargetTable(harness.dataset, "wide_key", cols, ("a", "b", "c", "d", "e"), "five-part key")
    warehouse.load(t, [], sc.D1, sc.D1)
    table = warehouse.client.get_table(f"{warehouse.project}.{harness.dataset}.wide_key")
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "_etl_partition_date"
    assert table.clustering_fields == ["a", "b", "c", "d"]
    assert table.description == "five-part key"
    modes = {f.name: f.mode for f in table.schema}
    assert modes["_etl_partition_date"] == "REQUIRED" and modes["a"] == "NULLABLE"
    assert [field_type(f) for f in table.schema] == [
        "INT64", "STRING", "DATE", "NUMERIC(20, 0)", "INT64", "FLOAT64", "DATE", "TIMESTAMP"
    ]
    ds = warehouse.client.get_dataset(f"{warehouse.project}.{harness.dataset}")
    assert ds.location == "US"

    # A non-clusterable key column ends the clustering prefix.
    t2 = TargetTable(harness.dataset, "float_key", cols, ("f", "a"))
    warehouse.load(t2, [], sc.D1, sc.D1)
    table2 = warehouse.client.get_table(f"{warehouse.project}.{harness.dataset}.float_key")
    assert not table2.clustering_fields


def test_decimal_extremes(harness: sc.Harness, warehouse: BigQueryWarehouse) -> None:
    """NUMERIC at its extremes (BIGINT UNSIGNED max, DECIMAL(38,9) +-max) lands exactly.
    BIGNUMERIC is staged as exact text and CAST in the swap: real BigQuery holds every
    DECIMAL(65,30), (38,10), (38,0) value; the emulator stores BIGNUMERIC as DuckDB
    DECIMAL(38,18) (values within it: scenario every_mapped_type_loads). Beyond it the load
    fails naming table, column and the MySQL value, the target left as it was."""
    numeric = sc.decimal_target(harness, "numeric_extremes", ("u64", "d38_9"))
    rows = [{"id": i, **{c: sc.DECIMAL_EXTREMES[c][1][i] for c in ("u64", "d38_9")}} for i in (0, 1)]
    warehouse.load(numeric, [sc.batch(numeric, sc.D1, sc.mysql_rows(numeric, rows))], sc.D1, sc.D1)
    assert sc.decimal_values(harness, "numeric_extremes") == {
        r["id"]: {c: Decimal(v) for c, v in r.items() if c != "id"} for r in rows
    }
    for column in ("d65_30", "d38_10", "d38_0"):
        t = sc.decimal_target(harness, f"wide_{column}", (column,))
        value = sc.DECIMAL_EXTREMES[column][1][1]
        warehouse.load(t, [sc.batch(t, sc.D1, sc.mysql_rows(t, [{"id": 1, column: "1"}]))],
                       sc.D1, sc.D1)
        before = harness.rows(f"wide_{column}", loaded_at=True)
        wide = sc.mysql_rows(t, [{"id": 2, column: value}])
        with pytest.raises(WarehouseError) as info:
            warehouse.load(t, [sc.batch(t, sc.D1, wide)], sc.D1, sc.D1)
        assert f".wide_{column}: column {column}: MySQL value {value} " in str(info.value)
        assert harness.rows(f"wide_{column}", loaded_at=True) == before
    assert harness.staging_leftovers() == []


def test_bigquery_client_for_an_endpoint_is_anonymous() -> None:
    from google.auth.credentials import AnonymousCredentials

    client = bigquery_client("p", "EU", api_endpoint="http://127.0.0.1:1")
    assert client.project == "p" and client.location == "EU"
    assert isinstance(client._credentials, AnonymousCredentials)
    assert client._connection.API_BASE_URL == "http://127.0.0.1:1"
    wh = BigQueryWarehouse(client)
    assert wh.kind == "bigquery" and wh.location == "EU"


def test_type_spelling() -> None:
    assert normalize_type("numeric(20,0)") == "NUMERIC(20, 0)"
    assert normalize_type("INTEGER") == "INT64"
    assert normalize_type(" BIGNUMERIC( 50 , 10 ) ") == "BIGNUMERIC(50, 10)"
    assert normalize_type("STRING(10)") == "STRING(10)"
    with pytest.raises(ValueError):
        normalize_type("ARRAY<INT64>")


def test_concurrent_loads_of_one_table(harness: sc.Harness, warehouse: BigQueryWarehouse) -> None:
    """Loads of different partitions of one table at once both land (a transaction aborted
    by the other one would be retried). The table exists first: the emulator fails
    concurrent DDL such as two dataset creations, which real BigQuery serialises."""
    from concurrent.futures import ThreadPoolExecutor

    t = sc.simple_target(harness, "busy")
    warehouse.load(t, [], sc.D1, sc.D1)
    days = [sc.D1, sc.D2]

    def load(day):
        return warehouse.load(t, [sc.batch(t, day, sc.people(range(10)))], day, day)

    with ThreadPoolExecutor(len(days)) as pool:
        results = list(pool.map(load, days))
    assert [r.rows for r in results] == [10, 10]
    assert warehouse.count_by_partition(harness.dataset, "busy", sc.D1, sc.D3) == {
        d: 10 for d in days
    }
    assert harness.staging_leftovers() == []


def _jobs_since(warehouse: BigQueryWarehouse, since: dt.datetime) -> list:
    return [j for j in warehouse.client.list_jobs(min_creation_time=since) if j.created >= since]


def test_stream_is_read_to_the_end_before_the_one_load_job(
    harness: sc.Harness, warehouse: BigQueryWarehouse
) -> None:
    """Five chunks give one load job and one query job (the swap), all created after the
    batches iterator was exhausted: the MySQL snapshot ends before any BigQuery wait."""
    t = sc.simple_target(harness, "spooled")
    warehouse.load(t, [], sc.D1, sc.D1)  # the table exists: only the load's own jobs below
    exhausted: list[dt.datetime] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(5):
            yield sc.batch(t, sc.D1, sc.people(range(i * 100, i * 100 + 100)))
            time.sleep(0.05)
        exhausted.append(dt.datetime.now(dt.UTC))

    started = dt.datetime.now(dt.UTC)
    result = warehouse.load(t, batches(), sc.D1, sc.D1)
    assert result.rows == 500 and result.chunks == 5
    jobs = _jobs_since(warehouse, started)
    assert sorted(j.job_type for j in jobs) == ["load", "query"]
    assert exhausted and min(j.created for j in jobs) >= exhausted[0]
    assert warehouse.count_by_partition(harness.dataset, "spooled", sc.D1, sc.D1) == {sc.D1: 500}


def test_vanished_staging_table_fails_the_load(harness: sc.Harness, warehouse: BigQueryWarehouse) -> None:
    """The load job never recreates the staging table (CREATE_NEVER): if it vanished, the
    load fails and the target keeps its rows."""
    t = sc.simple_target(harness, "vanishing")
    warehouse.load(t, [sc.batch(t, sc.D1, sc.people([1, 2]))], sc.D1, sc.D1)
    before = harness.rows("vanishing", loaded_at=True)

    def batches() -> Iterator[pa.RecordBatch]:
        yield sc.batch(t, sc.D1, sc.people([3]))
        for name in harness.staging_leftovers():  # the expiration, a cleanup, an operator...
            warehouse.client.delete_table(f"{warehouse.project}.{harness.dataset}.{name}")

    with pytest.raises(WarehouseError, match=r"\.vanishing: Parquet load into staging table .* failed"):
        warehouse.load(t, batches(), sc.D1, sc.D1)
    assert harness.rows("vanishing", loaded_at=True) == before
    assert harness.staging_leftovers() == []


def test_local_spool_is_removed_and_stale_ones_cleaned(
    harness: sc.Harness, warehouse: BigQueryWarehouse, tmp_path
) -> None:
    """The spool folder goes after the load; a killed load's folder (dead owner) goes at the next."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"plex_etl_{harness.dataset}_spooled_old"
    stale.mkdir()
    (stale / "owner").write_text(f"{socket.gethostname()} {dead}\n")
    (stale / "stage.parquet").write_bytes(b"x")
    wh = BigQueryWarehouse(warehouse.client, warehouse.location, retry=warehouse.retry,
                           job_retry=None, job_timeout=warehouse.job_timeout, staging_dir=tmp_path)
    t = sc.simple_target(harness, "spool_dir")
    assert wh.load(t, [sc.batch(t, sc.D1, sc.people([1, 2]))], sc.D1, sc.D1).rows == 2
    assert list(tmp_path.iterdir()) == []


def test_staged_row_count_must_equal_rows_read() -> None:
    check_staged_rows("d.t", "t__staging_1", 10, 10)
    with pytest.raises(WarehouseError, match=r"d\.t: staging table t__staging_1 holds 9 rows but 10 were read"):
        check_staged_rows("d.t", "t__staging_1", 9, 10)


def test_upsert_script_bounds_the_key_delete() -> None:
    """The key DELETE only searches the partitions that hold a staged key (found first)."""
    from plex_etl.warehouse.bigquery import replace_script

    t = TargetTable("d", "t", (sc.ID, sc.NAME), ("id",))
    sql = replace_script("`p.d.t`", "`p.d.s`", t, sc.D1, None, "upsert")
    assert sql.startswith("DECLARE moved_days ARRAY<DATE>;\nBEGIN TRANSACTION;")
    assert "DELETE FROM `p.d.t` t WHERE t.`_etl_partition_date` >= DATE '2025-03-01';" in sql
    assert "WHERE t.`_etl_partition_date` IN UNNEST(moved_days) AND EXISTS" in sql
    assert "moved_days" not in replace_script("`p.d.t`", "`p.d.s`", t, sc.D1, sc.D1, "replace")
