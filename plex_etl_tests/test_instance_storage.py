"""The batched event storages (plex_etl/instance_storage.py) record a range run exactly as
Dagster's own do: the same events, the same per-day status, the same planned asset-check rows,
failed days shown as failed. SQLite as the local dagster.yaml names it; PostgreSQL as
deploy/dagster.yaml names it, on the machine's PostgreSQL at 127.0.0.1:5432 (user postgres,
trust auth; `.ci/run` starts it), in the databases `<prefix>_storage_ours` and `..._stock`.
"""

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._serdes import deserialize_value, serialize_value

from plex_etl.instance_storage import (
    BatchedPostgresEventLogStorage,
    BatchedSqliteEventLogStorage,
    _BatchedAssetEvents,
)

REPOSITORY = Path(__file__).resolve().parent.parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-21")
FIRST, LAST = "2026-01-01", "2026-01-20"


def _assets(fail_at: str | None = None) -> list:
    @dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
              check_specs=[dg.AssetCheckSpec("rows_ok", asset="orders")])
    def orders(context: dg.AssetExecutionContext):
        if fail_at and fail_at in context.partition_keys:
            raise RuntimeError(f"failing on {fail_at}")
        for key in context.partition_keys:
            context.add_asset_metadata({"rows": len(key)}, partition_key=key)
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="rows_ok", passed=True)

    @dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[orders])
    def lines(context: dg.AssetExecutionContext) -> None:
        context.add_output_metadata({"days": len(context.partition_keys)})

    return [orders, lines]


def _instance(home: Path, dagster_yaml: Path | str, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """An instance in `home` from a dagster.yaml file, or from its text."""
    home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the repository's dagster.yaml stores there
    if isinstance(dagster_yaml, Path):
        shutil.copy(dagster_yaml, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(dagster_yaml)
    return dg.DagsterInstance.from_config(str(home))


def _sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dg.DagsterInstance, dg.DagsterInstance]:
    """(ours: the repository's dagster.yaml, stock: Dagster's default SQLite storage)."""
    ours = _instance(tmp_path / "ours", REPOSITORY / "dagster.yaml", monkeypatch)
    return ours, _instance(tmp_path / "stock", "telemetry: {enabled: false}\n", monkeypatch)


@pytest.fixture
def postgres_databases() -> Iterator[Callable[[str], str]]:
    """Creates fresh databases on the machine's PostgreSQL by suffix, drops them afterwards."""
    import psycopg2

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as error:  # as test_deploy*.py: fail with the reason
        pytest.fail(f"PostgreSQL does not answer on {PG['host']}:{PG['port']} ({error}); .ci/run starts it")
    admin.autocommit = True
    prefix = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")  # parallel sessions differ
    created: list[str] = []

    def create(suffix: str) -> str:
        name = f"{prefix}_storage_{suffix}"
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield create
    with admin.cursor() as cursor:
        for name in created:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, databases: Callable[[str], str],
              ) -> tuple[dg.DagsterInstance, dg.DagsterInstance]:
    """(ours: deploy/dagster.yaml, stock: Dagster's `storage: postgres`), each on a database of its own."""
    for name, value in {"HOST": PG["host"], "PORT": str(PG["port"]), "DB": databases("ours"),
                        "USERNAME": PG["user"], "PASSWORD": ""}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    ours = _instance(tmp_path / "ours", REPOSITORY / "deploy" / "dagster.yaml", monkeypatch)
    stock = (
        "telemetry: {enabled: false}\nstorage:\n  postgres:\n    postgres_db:\n"
        f"      hostname: {PG['host']}\n      port: {PG['port']}\n      db_name: {databases('stock')}\n"
        f"      username: {PG['user']}\n      password: ''\n      scheme: postgresql+psycopg2\n"
    )
    return ours, _instance(tmp_path / "stock", stock, monkeypatch)


def _run(instance: dg.DagsterInstance, fail_at: str | None = None) -> bool:
    result = dg.materialize(
        _assets(fail_at), instance=instance, raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: FIRST, ASSET_PARTITION_RANGE_END_TAG: LAST},
    )
    return result.success


def _recorded(instance: dg.DagsterInstance) -> dict:
    """What the instance holds, independent of storage ids and timestamps."""
    storage = instance.event_log_storage
    with storage.index_connection() as connection:
        events = Counter(
            (row.dagster_event_type, row.asset_key, row.partition)
            for row in connection.execute(SqlEventLogStorageTable.select()).fetchall()
            if row.dagster_event_type
        )
        checks = Counter(
            (row.asset_key, row.check_name, row.partition, row.execution_status)
            for row in connection.execute(AssetCheckExecutionsTable.select()).fetchall()
        )
        # What the planned days' rows hold, less the run and the time: the same as Dagster's.
        planned = Counter(
            (row.partition, serialize_value(deserialize_value(row.event)._replace(run_id="", timestamp=0)))
            for row in connection.execute(SqlEventLogStorageTable.select()).fetchall()
            if row.dagster_event_type == "ASSET_MATERIALIZATION_PLANNED"
        )
    status = {}
    for name in ("orders", "lines"):
        value = get_and_update_asset_status_cache_value(instance, dg.AssetKey(name), DAYS)
        status[name] = (
            sorted(value.deserialize_materialized_partition_subsets(DAYS).get_partition_keys()),
            sorted(value.deserialize_failed_partition_subsets(DAYS).get_partition_keys()),
        )
        record = instance.get_latest_materialization_event(dg.AssetKey(name))
        status[name + " latest"] = record.dagster_event.partition if record else None
    run_events = Counter(
        (entry.dagster_event_type, entry.dagster_event.partition if entry.dagster_event else None)
        for run in instance.get_runs() for entry in instance.all_logs(run.run_id) if entry.dagster_event
    )
    return {"index": events, "checks": checks, "status": status, "runs": run_events, "planned": planned}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("fail_at", [None, "2026-01-10"], ids=["succeeds", "fails"])
def test_batched_storage_records_a_range_run_like_dagsters(tmp_path, monkeypatch, request, backend, fail_at):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "7")  # several batches per step, one split in a type run
    if backend == "sqlite":
        ours, stock = _sqlite(tmp_path, monkeypatch)
        batched = BatchedSqliteEventLogStorage
    else:
        ours, stock = _postgres(tmp_path, monkeypatch, request.getfixturevalue("postgres_databases"))
        batched = BatchedPostgresEventLogStorage
    assert type(ours.event_log_storage) is batched
    assert not isinstance(stock.event_log_storage, _BatchedAssetEvents)

    batches: list[int] = []
    store = _BatchedAssetEvents._store_asset_events
    monkeypatch.setattr(_BatchedAssetEvents, "_store_asset_events",
                        lambda self, events: batches.append(len(events)) or store(self, events))
    handed: list[tuple[str, str | None]] = []  # planned events as Dagster hands them to our storage
    store_batch = _BatchedAssetEvents.store_event_batch
    monkeypatch.setattr(_BatchedAssetEvents, "store_event_batch", lambda self, events: handed.extend(
        (e.dagster_event.asset_key.to_user_string(), e.dagster_event.partition) for e in events
        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED) or store_batch(self, events))
    assert _run(ours, fail_at) is _run(stock, fail_at) is (fail_at is None)
    # Dagster planned each table's range in one event; the storage wrote the 2 x 20 planned days
    # in one statement, and the materializations in batches of the configured size.
    assert sorted(handed) == [("lines", None), ("orders", None)]
    assert 40 in batches and (7 in batches or fail_at)
    recorded, expected = _recorded(ours), _recorded(stock)
    assert recorded == expected
    days = DAYS.get_partition_keys()
    if fail_at is None:
        assert recorded["status"]["orders"] == (days, [])
        assert recorded["status"]["lines"] == (days, [])
        assert recorded["status"]["orders latest"] == LAST
        assert recorded["index"][("ASSET_MATERIALIZATION_PLANNED", '["orders"]', FIRST)] == 1
        assert sorted(partition for (_, _, partition, _) in recorded["checks"] if partition) == days
    else:
        assert recorded["status"]["orders"] == ([], days)  # every planned day shows as failed


def test_local_storage_turns_batching_on_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    _instance(tmp_path / "home", REPOSITORY / "dagster.yaml", monkeypatch)
    assert int(os.environ["DAGSTER_EVENT_BATCH_SIZE"]) > 0
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    _instance(tmp_path / "other", REPOSITORY / "dagster.yaml", monkeypatch)
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"
