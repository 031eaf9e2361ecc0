"""Partitioned table assets stream MySQL partitions into the local warehouse, atomically."""

import datetime as dt
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.spec import replicated_table
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import create_engine
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import build_defs, materialize, mysql_rows, point_at_test_databases, sorted_rows

DATASET = "plex_analytics"


@pytest.fixture(scope="module")
def env(demo_sources, demo_end_date, tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("replication") / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        point_at_test_databases(patch, demo_sources, warehouse)
        yield {
            "defs": build_defs(),
            "warehouse": LocalWarehouse(warehouse),
            "plex": create_engine(demo_sources["plex"]),
            "source": demo_sources["plex"],
            "day": demo_end_date - dt.timedelta(days=2),
            "today": demo_end_date,
        }


def warehouse_count(env, table: str, day: dt.date) -> int:
    return env["warehouse"].count_by_partition(DATASET, f"plex_{table}", day, day).get(day, 0)


def checks_passed(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()
    }


def test_event_child_and_grandchild_partitions_equal_mysql(env):
    day = env["day"]
    result = materialize(env["defs"], ["plex/factcabecera", "plex/factlineas", "plex/factcoberturas"], day)
    assert result.success
    lo, hi = f"'{day}'", f"'{day + dt.timedelta(days=1)}'"
    expected = {
        "factcabecera": f"SELECT COUNT(*) FROM factcabecera WHERE Emision >= {lo} AND Emision < {hi}",
        "factlineas": "SELECT COUNT(*) FROM factlineas l JOIN factcabecera c USING (IDComprobante) "
        f"WHERE c.Emision >= {lo} AND c.Emision < {hi}",
        "factcoberturas": "SELECT COUNT(*) FROM factcoberturas f "
        "JOIN factlineas l ON l.IDComprobante = f.IDComprobante AND l.Orden = f.Orden "
        f"JOIN factcabecera c ON c.IDComprobante = l.IDComprobante WHERE c.Emision >= {lo} AND c.Emision < {hi}",
    }
    for table, sql in expected.items():
        mysql = mysql_rows(env["plex"], sql)[0][0]
        assert mysql > 0, table
        assert warehouse_count(env, table, day) == mysql, table
    assert all(checks_passed(result).values()), checks_passed(result)
    metadata = result.asset_materializations_for_node("plex__factlineas")[0].metadata
    assert metadata["rows"].value == metadata["dagster/row_count"].value == warehouse_count(env, "factlineas", day)
    assert metadata["chunks"].value >= 1 and metadata["rows_per_second"].value > 0
    assert metadata["mysql_snapshot_counts"].value == {day.isoformat(): warehouse_count(env, "factlineas", day)}
    # The column schema is declared with the asset, before any load.
    spec = next(iter(env["defs"].get_assets_def(dg.AssetKey(["plex", "factlineas"])).specs))
    schema = spec.metadata["dagster/column_schema"]
    catalog, plan = load_source_catalog("plex")
    target = replicated_table(catalog, plan, "factlineas").target
    kind = env["warehouse"].kind
    assert [(c.name, c.type) for c in schema.columns] == [
        (c.name, c.bigquery_type if kind == "bigquery" else c.local_type) for c in target.columns
    ]


def test_rematerializing_a_partition_leaves_identical_content(env):
    day = env["day"] - dt.timedelta(days=1)
    materialize(env["defs"], ["plex/factlineas"], day)
    sql = f"SELECT * FROM {DATASET}.plex_factlineas WHERE _etl_partition_date = DATE '{day}'"
    first = sorted_rows(env["warehouse"].query(sql))
    materialize(env["defs"], ["plex/factlineas"], day)
    second = sorted_rows(env["warehouse"].query(sql))
    assert first == second and len(first) == warehouse_count(env, "factlineas", day)


def test_upsert_never_duplicates_a_key(env):
    day = env["day"]
    for _ in range(2):
        materialize(env["defs"], ["plex/apppedidos"], day - dt.timedelta(days=1), day)
    rows = env["warehouse"].query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT IDPedido) AS k FROM {DATASET}.plex_apppedidos"
    ).to_pylist()[0]
    assert rows["n"] == rows["k"] > 0
    mysql = mysql_rows(
        env["plex"],
        f"SELECT COUNT(*) FROM apppedidos WHERE DATE(COALESCE(FechaEstado, Fecha)) = '{day}'",
    )[0][0]
    assert warehouse_count(env, "apppedidos", day) == mysql


def test_date_range_is_one_run_with_one_materialization_per_day(env):
    start, end = env["day"] - dt.timedelta(days=3), env["day"]
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(env["defs"], ["plex/asientos", "plex/asientos_detalle"], start, end, instance=instance)
    assert result.success
    assert len(instance.get_runs()) == 1
    days = {m.partition for m in result.asset_materializations_for_node("plex__asientos")}
    assert days == {(start + dt.timedelta(days=i)).isoformat() for i in range(4)}
    for i in range(4):
        day = start + dt.timedelta(days=i)
        mysql = mysql_rows(
            env["plex"], f"SELECT COUNT(*) FROM asientos WHERE DATE(FechaHora) = '{day}'"
        )[0][0]
        assert warehouse_count(env, "asientos", day) == mysql


def snapshot_day(result: dg.ExecuteInProcessResult, node: str) -> dt.date:
    """The day a snapshot landed as, as its materialization says (the asset reads the clock)."""
    return dt.date.fromisoformat(result.asset_materializations_for_node(node)[0].metadata["load_last_day"].value)


def test_snapshot_asset_is_unpartitioned_and_lands_as_todays_snapshot(env):
    assert env["defs"].get_assets_def(dg.AssetKey(["plex", "stock"])).partitions_def is None
    result = materialize(env["defs"], ["plex/stock"], None)
    assert result.success
    day = snapshot_day(result, "plex__stock")
    assert day in (env["today"], env["today"] + dt.timedelta(days=1))  # the session may cross midnight
    mysql = mysql_rows(env["plex"], "SELECT COUNT(*) FROM stock")[0][0]
    assert warehouse_count(env, "stock", day) == mysql
    latest = env["warehouse"].query(f"SELECT COUNT(*) AS n FROM {DATASET}.plex_stock_latest").to_pylist()
    assert latest[0]["n"] == mysql
    assert all(checks_passed(result).values()), checks_passed(result)


def test_snapshot_retention_through_the_asset(env):
    """Snapshots older than snapshot_retention_days go at the next load; younger ones stay."""
    import duckdb

    _catalog, plan = load_source_catalog("plex")
    keep = plan.snapshot_retention_days
    first = snapshot_day(materialize(env["defs"], ["plex/stock"], None), "plex__stock")
    old, young = first - dt.timedelta(days=keep + 3), first - dt.timedelta(days=keep - 1)
    with duckdb.connect(str(env["warehouse"].path)) as con:
        for day in (old, young):
            con.execute(
                f"INSERT INTO {DATASET}.plex_stock SELECT * REPLACE (DATE '{day}' AS _etl_partition_date) "
                f"FROM {DATASET}.plex_stock WHERE _etl_partition_date = DATE '{first}'"
            )
    result = materialize(env["defs"], ["plex/stock"], None)
    day = snapshot_day(result, "plex__stock")
    counts = env["warehouse"].count_by_partition(DATASET, "plex_stock", None, None)
    mysql = mysql_rows(env["plex"], "SELECT COUNT(*) FROM stock")[0][0]
    assert old not in counts and counts[young] == mysql and counts[day] == mysql
    metadata = result.asset_materializations_for_node("plex__stock")[0].metadata
    assert metadata["snapshot_rows_expired"].value == mysql


@pytest.mark.parametrize("fail_after", ["first", "middle", "last"])
def test_failure_after_chunk_k_leaves_the_target_untouched(env, fail_after):
    catalog, plan = load_source_catalog("plex")
    small = replace(plan, tables={**plan.tables, "factlineas": replace(plan.tables["factlineas"], chunk_rows=40)})
    spec = replicated_table(catalog, small, "factlineas")
    day = env["day"]
    materialize(env["defs"], ["plex/factlineas"], day)
    sql = f"SELECT * FROM {DATASET}.plex_factlineas"
    before = sorted_rows(env["warehouse"].query(sql), drop=())
    stream = PartitionStream(env["source"], spec, day, day)
    chunks = max(3, -(-warehouse_count(env, "factlineas", day) // 40))
    k = {"first": 1, "middle": chunks // 2, "last": chunks}[fail_after]

    def failing():
        for i, batch in enumerate(stream, start=1):
            yield batch
            if i == k:
                raise RuntimeError(f"injected failure after chunk {k}")

    with pytest.raises(RuntimeError, match="injected failure"):
        env["warehouse"].load(spec.target, failing(), day, day)
    assert sorted_rows(env["warehouse"].query(sql), drop=()) == before


def test_cli_materialize_one_partition(env, tmp_path):
    day = env["day"]
    # Through the text read (extract/text.py), the fallback when the binary read's extension cannot
    # run: one whole load by it, end to end; every other load here goes through the binary read.
    variables = dict(os.environ, DAGSTER_HOME=str(tmp_path), PLEX_ETL_READER="text")
    command = [
        str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "plex_etl.definitions",
        "--select", "plex/pedidos", "--partition", day.isoformat(),
    ]
    completed = subprocess.run(command, env=variables, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    mysql = mysql_rows(env["plex"], f"SELECT COUNT(*) FROM pedidos WHERE DATE(FechaDesde) = '{day}'")[0][0]
    assert warehouse_count(env, "pedidos", day) == mysql
    assert "RUN_SUCCESS" in completed.stderr + completed.stdout
    # The load's blocking checks ran with it; the whole-table reconciliation did not ride along
    # (it runs on its own: daily, the job plex_reconciliation, or the Checks tab).
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        [run] = instance.get_run_records()
        evaluations = instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        checks = {e.dagster_event.event_specific_data.check_name for e in evaluations}
        assert {"schema_matches_catalog", "row_count_matches_mysql"} <= checks
        assert "warehouse_equals_mysql" not in checks
        planned = instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        # Dagster selects every check of a table it loads; the reconciliation skipped itself.
        assert "warehouse_equals_mysql" in {e.dagster_event.event_specific_data.check_name for e in planned}


def test_cli_partition_range_is_one_run(env, tmp_path):
    start, end = env["day"] - dt.timedelta(days=2), env["day"]
    variables = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    command = [
        str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "plex_etl.definitions",
        "--select", "key:plex/fact*", "--partition-range", f"{start}...{end}",
    ]
    completed = subprocess.run(command, env=variables, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert len(instance.get_runs()) == 1
    for i in range(3):
        day = start + dt.timedelta(days=i)
        mysql = mysql_rows(
            env["plex"],
            "SELECT COUNT(*) FROM factpagos p JOIN factcabecera c USING (IDComprobante) "
            f"WHERE DATE(c.Emision) = '{day}'",
        )[0][0]
        assert warehouse_count(env, "factpagos", day) == mysql


def test_definitions_load_without_a_database(monkeypatch):
    monkeypatch.setenv("PLEX_MYSQL_HOST", "192.0.2.1")  # TEST-NET: nothing answers there
    monkeypatch.setenv("PLEX_MYSQL_PORT", "1")
    defs = build_defs()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert {"plex/factcabecera", "plex/factlineas", "quantio/stock"} <= keys


def test_asset_graph_follows_foreign_keys(env):
    defs = env["defs"]
    graph = defs.resolve_asset_graph()
    factlineas = graph.get(dg.AssetKey(["plex", "factlineas"]))
    assert dg.AssetKey(["plex", "factcabecera"]) in factlineas.parent_keys
    categories = graph.get(dg.AssetKey(["plex", "categories"]))
    assert dg.AssetKey(["plex", "categories"]) not in categories.parent_keys
    node = defs.get_assets_def(dg.AssetKey(["plex", "factlineas"]))
    assert node.group_names_by_key[dg.AssetKey(["plex", "factlineas"])] == "plex_factcabecera"
    spec = next(iter(node.specs))
    assert spec.kinds == {"mysql", "duckdb"} and spec.tags["plex_etl/tier"] == "critical"  # the warehouse that runs
    assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_stream_yields_batches_of_the_table_chunk_size(env):
    catalog, plan = load_source_catalog("plex")
    small = replace(plan, tables={**plan.tables, "factlineas": replace(plan.tables["factlineas"], chunk_rows=100)})
    spec = replicated_table(catalog, small, "factlineas")
    progress: list[str] = []
    stream = PartitionStream(env["source"], spec, env["day"], env["day"], progress=progress.append)
    sizes = [batch.num_rows for batch in stream]
    assert sum(sizes) == stream.expected_rows == stream.rows > 200
    assert all(size == 100 for size in sizes[:-1]) and 0 < sizes[-1] <= 100
    assert stream.schema.names[-1] == "_etl_partition_date"
    # No count before the rows (one pass): chunks are numbered, their total is known at the end.
    assert progress[0].startswith(f"factlineas {env['day']}: chunk 1, 100 rows (100 total, ")
    assert progress[-1].endswith("rows/s)") and len(progress) == len(sizes)



def test_the_progress_rate_never_reads_0k():
    from plex_etl.extract.stream import format_rate

    assert [format_rate(r) for r in (0, 312.4, 9_999, 12_500, 180_400)] == [
        "0 rows/s", "312 rows/s", "9,999 rows/s", "12.5k rows/s", "180k rows/s"
    ]
