"""The local (DuckDB) warehouse: shared scenarios plus DuckDB-specific behaviour."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest

from plex_etl.warehouse import LocalWarehouse, TargetTable, WarehouseColumn, WarehouseError
from plex_etl_tests import warehouse_scenarios as sc


@pytest.fixture
def harness(tmp_path: Path) -> sc.Harness:
    staging = tmp_path / "staging"
    wh = LocalWarehouse(tmp_path / "warehouse.duckdb", staging_dir=staging)
    return sc.Harness(
        wh=wh,
        dataset="plex_analytics",
        staging_leftovers=lambda: sorted(p.name for p in staging.iterdir()),
    )


@pytest.mark.parametrize("scenario", sc.SCENARIOS, ids=lambda f: f.__name__.removeprefix("scenario_"))
def test_scenario(harness: sc.Harness, scenario) -> None:
    scenario(harness)


def test_kind_and_description(harness: sc.Harness) -> None:
    assert harness.wh.kind == "local"
    t = sc.simple_target(harness, "described")
    harness.wh.load(t, [sc.batch(t, sc.D1, sc.people([1]))], sc.D1, sc.D1)
    got = harness.wh.query(
        "SELECT comment FROM duckdb_tables() WHERE schema_name = 'plex_analytics' "
        "AND table_name = 'described'"
    ).to_pylist()
    assert got == [{"comment": "test table described"}]


def test_failure_in_final_step_rolls_back(harness: sc.Harness) -> None:
    """The DELETE has run when the INSERT fails: the transaction restores the target."""
    t = sc.three_partitions(harness, "fragile")
    before = harness.rows("fragile", loaded_at=True)
    # Same table, but a value the local type cannot hold (DECIMAL(2,0) overflow on insert).
    tiny = WarehouseColumn("n", pa.int64(), "NUMERIC(2, 0)", "DECIMAL(2,0)")
    t2 = TargetTable(t.dataset, t.name, (*t.columns, tiny), t.primary_key)
    with pytest.raises(WarehouseError, match=r"plex_analytics\.fragile"):
        harness.wh.load(t2, [sc.batch(t2, sc.D1, [{"id": 1, "name": "x", "n": 1000}])],
                        sc.D1, sc.D3)
    assert harness.rows("fragile", loaded_at=True) == before
    assert harness.wh.columns("plex_analytics", "fragile") == {
        "id": "BIGINT", "name": "VARCHAR", "_etl_partition_date": "DATE",
        "_etl_loaded_at": "TIMESTAMP WITH TIME ZONE",
    }, "the added column must be rolled back too"
    assert harness.staging_leftovers() == []


def test_staging_write_failure_names_the_table(harness: sc.Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's write fails (disk full): the load raises naming the table, stops reading the
    stream, and leaves the target and the staging folder as before."""
    t = sc.three_partitions(harness, "diskfull")
    before = harness.rows("diskfull", loaded_at=True)
    writes = 0

    def write_batch(self: pq.ParquetWriter, batch: pa.RecordBatch) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", write_batch)
    read = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read
        for i in range(10):
            read += 1
            yield sc.batch(t, sc.D1, sc.people([100 + i]))

    with pytest.raises(WarehouseError, match=r"plex_analytics\.diskfull: cannot write the staging file.*space"):
        harness.wh.load(t, batches(), sc.D1, sc.D3)
    assert read == 2, "the failed chunk is the last read"
    monkeypatch.undo()
    assert harness.rows("diskfull", loaded_at=True) == before
    assert harness.staging_leftovers() == []


def test_wide_decimal_is_exact_into_decimal38(harness: sc.Harness) -> None:
    col = WarehouseColumn("amount", pa.decimal256(50, 10), "BIGNUMERIC(50, 10)", "DECIMAL(38,10)")
    t = TargetTable("plex_analytics", "wide", (sc.ID, col), ("id",))
    value = Decimal("1234567890123456789012345678.0123456789")  # 38 digits
    harness.wh.load(t, [sc.batch(t, sc.D1, [{"id": 1, "amount": value}])], sc.D1, sc.D1)
    assert harness.rows("wide")[0]["amount"] == value


def test_decimal_extremes_round_trip_exactly(harness: sc.Harness) -> None:
    """BIGINT UNSIGNED max, DECIMAL(38,9), (65,30), (38,10), (38,0) at their positive and
    negative extremes (and the smallest DECIMAL(65,30) step) land exactly."""
    t = sc.decimal_target(harness, "extremes")
    texts = [{"id": i} | {c: values[i] for c, (_, values) in sc.DECIMAL_EXTREMES.items() if i < len(values)}
             for i in range(3)]
    harness.wh.load(t, [sc.batch(t, sc.D1, sc.mysql_rows(t, texts))], sc.D1, sc.D1)
    assert sc.decimal_values(harness, "extremes") == {
        r["id"]: {c: Decimal(r[c]) if c in r else None for c in sc.DECIMAL_EXTREMES} for r in texts
    }
    # Wide values are exact text, never exponent notation.
    got = harness.wh.query("SELECT d65_30 FROM plex_analytics.extremes WHERE id = 2").column(0)
    assert got.to_pylist() == ["0.000000000000000000000000000001"]


def test_batches_are_matched_by_name_and_cast(harness: sc.Harness) -> None:
    t = sc.simple_target(harness, "loose")
    # columns in another order, int32 ids, large strings
    b = pa.RecordBatch.from_pydict({
        "_etl_partition_date": pa.array([sc.D1], pa.date32()),
        "name": pa.array(["a"], pa.large_string()),
        "id": pa.array([1], pa.int32()),
    })
    harness.wh.load(t, [b], sc.D1, sc.D1)
    assert harness.rows("loose") == [{"id": 1, "name": "a", "_etl_partition_date": sc.D1}]
    bad = pa.RecordBatch.from_pydict({"id": [2], "_etl_partition_date": [sc.D1]})
    with pytest.raises(WarehouseError, match=r"plex_analytics\.loose.*missing"):
        harness.wh.load(t, [bad], sc.D1, sc.D1)


def test_lock_held_too_long_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
         "time.sleep(30)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        wh = LocalWarehouse(path, lock_timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(WarehouseError, match="locked by another process"):
            wh.columns("plex_analytics", "anything")
        assert time.monotonic() - t0 < 10
    finally:
        holder.kill()
        holder.wait()


def _load_in_child(path: str, table: str, first_id: int) -> None:
    """Runs in a separate process: a slow stream of 5 chunks into `table`."""
    wh = LocalWarehouse(path)
    t = TargetTable("plex_analytics", table, (sc.ID, sc.NAME), ("id",))

    def slow():
        for i in range(5):
            time.sleep(0.05)
            yield sc.batch(t, sc.D1, sc.people(range(first_id + 100 * i, first_id + 100 * i + 100)))

    result = wh.load(t, slow(), sc.D1, sc.D1)
    assert result.rows == 500


def test_two_processes_load_two_tables_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    ctx = multiprocessing.get_context("spawn")
    # Hold the file while the children stage: both must wait for the lock, then succeed.
    holder = duckdb.connect(str(path))
    children = [
        ctx.Process(target=_load_in_child, args=(str(path), name, first))
        for name, first in (("left", 0), ("right", 10_000))
    ]
    for p in children:
        p.start()
    time.sleep(2.0)
    holder.close()
    for p in children:
        p.join(timeout=120)
    assert [p.exitcode for p in children] == [0, 0]
    wh = LocalWarehouse(path)
    for table, first in (("left", 0), ("right", 10_000)):
        assert wh.count_by_partition("plex_analytics", table, sc.D1, sc.D1) == {sc.D1: 500}
        got = wh.query(f"SELECT MIN(id) AS lo, MAX(id) AS hi FROM plex_analytics.{table}")
        assert got.to_pylist() == [{"lo": first, "hi": first + 499}]


def test_invalid_load_arguments(harness: sc.Harness) -> None:
    t = sc.simple_target(harness, "args")
    with pytest.raises(WarehouseError, match="mode"):
        harness.wh.load(t, [], sc.D1, sc.D1, "merge")  # type: ignore[arg-type]
    with pytest.raises(WarehouseError, match="after end"):
        harness.wh.load(t, [], sc.D2, sc.D1)
    reserved = WarehouseColumn("_etl_loaded_at", pa.string(), "STRING", "VARCHAR")
    with pytest.raises(WarehouseError, match="reserved"):
        harness.wh.load(TargetTable("plex_analytics", "r", (reserved,)), [], sc.D1, sc.D1)
    assert harness.wh.columns("plex_analytics", "args") is None


def _duckdb_size(limit: str) -> str:
    """DuckDB's own spelling of a memory limit ('73MB' -> '69.6 MiB')."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{limit}'")
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    finally:
        con.close()


def test_memory_settings_reach_duckdb(tmp_path: Path) -> None:
    """By default DuckDB gets one thread and a memory cap: 128MB for queries, and for a load one
    sized by the table's width (never DuckDB's own 80% of RAM); explicit settings win."""
    path = tmp_path / "w.duckdb"
    wh = LocalWarehouse(path)
    settings = "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t"
    assert wh.query(settings).to_pylist() == [{"m": _duckdb_size("128MB"), "t": 1}]
    wide = TargetTable("plex_analytics", "wide", (sc.ID, *(WarehouseColumn(f"c{i}", pa.float64(), "FLOAT64", "DOUBLE")
                                                         for i in range(60))), ("id",))
    # A connection held open meanwhile shares the load's database instance, hence its settings.
    held = duckdb.connect(str(path))
    try:
        wh.load(wide, [sc.batch(wide, sc.D1, [{"id": 1}])], sc.D1, sc.D1)
        assert held.execute(settings).fetchall() == [(_duckdb_size("158MB"), 1)]  # 63 columns x 2.5 MB
    finally:
        held.close()
    assert LocalWarehouse(path, memory_limit="1GB", threads=2).query(settings).to_pylist() == [
        {"m": _duckdb_size("1GB"), "t": 2}]
    from plex_etl.warehouse.local import load_memory_limit

    assert [load_memory_limit(3), load_memory_limit(63), load_memory_limit(63, threads=2)] == ["64MB", "158MB", "315MB"]


def test_load_of_several_row_groups_is_atomic(harness: sc.Harness) -> None:
    """300,000 rows (DuckDB writes row groups of 122,880) in 3 chunks under the default memory cap,
    merged by key (their keys deleted in 2 slices): a reload replaces them all; a reload whose
    last row cannot be cast leaves them all."""
    t = sc.simple_target(harness, "big", WarehouseColumn("n", pa.int64(), "NUMERIC(9, 0)", "DECIMAL(9,0)"))

    def chunks(last: int, day: dt.date = sc.D1) -> Iterator[pa.RecordBatch]:
        for lo in range(0, 300_000, 100_000):
            ids = pa.array(range(lo, lo + 100_000), pa.int64())
            n = pa.array([last if i == 299_999 else i for i in range(lo, lo + 100_000)], pa.int64())
            names = pa.compute.binary_join_element_wise("name ", pa.compute.cast(ids, pa.string()), "")
            yield pa.RecordBatch.from_arrays([ids, names, n, pa.array([day] * 100_000, pa.date32())],
                                             schema=t.arrow_schema)

    summary = "SELECT COUNT(*) AS rows, SUM(n) AS total, MIN(_etl_loaded_at) AS at FROM plex_analytics.big"
    harness.wh.load(t, chunks(1), sc.D1, sc.D1, "upsert")
    harness.wh.load(t, chunks(2, sc.D2), sc.D2, sc.D2, "upsert")  # every key moves to D2: replaced, not added
    before = harness.wh.query(summary).to_pylist()
    assert before[0]["rows"] == 300_000 and before[0]["total"] == sum(range(299_999)) + 2
    assert harness.wh.count_by_partition("plex_analytics", "big", None, None) == {sc.D2: 300_000}
    with pytest.raises(WarehouseError, match=r"plex_analytics\.big: load failed"):
        harness.wh.load(t, chunks(10**12), sc.D1, sc.D1, "upsert")  # beyond DECIMAL(9,0), in the last row group
    assert harness.wh.query(summary).to_pylist() == before
    assert harness.staging_leftovers() == []
