"""The Dagster instance's storage, writing a run's asset events in batches: SQLite locally,
PostgreSQL in production.

Why: a range run (a backfill, `plex-etl replicate --full`) records one planned event and one
materialization per table per day, so that every day keeps its own status. Two years of 23
dated tables are 33,626 events. Dagster's SQLite event log writes each of them alone (a new
engine, a connection and a commit on the run's file and again on the index file: ~10-30 ms per
event here): ~10 minutes of bookkeeping around ~20 s of rows. dagster-postgres inserts a batch
of materializations at once but still writes each planned event alone, opening two connections
(its engine pools none) and committing twice: ~25 ms per event on a local server, more over a
network (docs/benchmarks.md, issue 14 D).

Dagster hands asset events to `store_event_batch` when `DAGSTER_EVENT_BATCH_SIZE` is set (these
storages set it unless the environment does; the production image sets it). The event log
storages below write each batch of planned events, materializations or observations with one
statement per table: the same rows, tags and asset records as event-by-event writes
(plex_etl_tests/test_instance_storage.py), so per-day status and in-progress and failed days
show as before. They also serialize a planned partitioned check once, not once per day, and
take a range run's plan as one planned event per table (Dagster's
`supports_partition_subset_in_asset_materialization_planned_events`), written as the per-day
planned events Dagster would otherwise have built, logged and handed over one by one: half of
a range run's events cost Dagster nothing. The
mechanism is one (`_BatchedAssetEvents`); the two storages differ only in where a run's events
live. Everything else is Dagster's.

`dagster.yaml` names `LocalSqliteStorage` (the layout of `$DAGSTER_HOME` is Dagster's own, so
an existing home keeps its runs); `deploy/dagster.yaml` names `BatchedPostgresStorage` (Dagster's
PostgreSQL tables, unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from dagster._core.events import AssetMaterializationPlannedData, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Events whose only storage work is a row in the run's events, a row in the index with its tags,
# and the asset's record (SqliteEventLogStorage.store_event, PostgresEventLogStorage.store_event):
# safe to write in one statement.
BATCHED_EVENT_TYPES = frozenset({
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
})
# Dagster writes a batch's tags as one INSERT, and SQLite binds at most 32,766 values per
# statement: 500 events (a few tags of 4 values each) stay well below it whatever
# DAGSTER_EVENT_BATCH_SIZE says. Also the batch size these storages turn on.
EVENTS_PER_STATEMENT = 500
# Stands for the day in the one serialization of a range's planned days: no partition key holds
# NUL characters, so its JSON text occurs in the serialized event only where the day goes.
DAY_PLACEHOLDER = "\x00plex-etl planned day\x00"
DAY_PLACEHOLDER_JSON = json.dumps(DAY_PLACEHOLDER)


def _turn_batching_on() -> None:
    # Dagster reads the batch size from the environment at each event, in every process that
    # writes to the instance (CLI, webserver, daemon, run workers): each of them builds its
    # storage first. An explicit setting (0 turns batching off) is kept.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENTS_PER_STATEMENT))


class _BatchedAssetEvents:
    """Batched writes of asset events, and planned checks serialized once, for a SqlEventLogStorage.

    `RUN_EVENTS_IN_INDEX` says where a run's events live: SQLite keeps them in a file per run and
    mirrors asset events in the index file (two inserts); PostgreSQL has one table (one insert).
    """

    RUN_EVENTS_IN_INDEX: ClassVar[bool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Here, not only in the instance storages: the Helm chart can name this event log
        # storage alone (deploy/helm/values.yaml).
        _turn_batching_on()
        super().__init__(*args, **kwargs)

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        # Dagster then plans a range run with one event per table instead of one per day, which
        # halves the events it builds, logs and hands over; these storages write that event as
        # the per-day planned events (`_per_day`), so failed and in-progress days keep their
        # status (Dagster's own storages would store it as one event without days).
        return True

    def store_event(self, event: EventLogEntry) -> None:
        if _planned_range(event) is not None:
            self.store_event_batch([event])
        else:
            super().store_event(event)  # type: ignore[misc]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        events = list(_per_day(events))
        for group, batched in _groups(events):
            if batched and len(group) > 1:
                for start in range(0, len(group), EVENTS_PER_STATEMENT):
                    self._store_asset_events(group[start:start + EVENTS_PER_STATEMENT])
            else:
                for event in group:
                    self.store_event(event)  # type: ignore[attr-defined]

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        storage: Any = self
        # executemany, not one INSERT with many VALUES: SQLAlchemy compiles the latter in Python,
        # value by value, and that cost as much as the writes it saved.
        rows = self._rows(events)
        table = SqlEventLogStorageTable
        insert = table.insert()
        returning_ids = insert.returning(table.c.id, sort_by_parameter_order=True)
        with storage.run_connection(events[0].run_id) as connection:
            if self.RUN_EVENTS_IN_INDEX:
                # Its own statement, committed before the tags, as dagster-postgres does: the
                # rows become visible to run-log readers as soon as written.
                ids = [row[0] for row in connection.execute(returning_ids, rows)]
            else:
                connection.execute(insert, rows)
        with storage.index_transaction() as connection:
            if not self.RUN_EVENTS_IN_INDEX:
                ids = [row[0] for row in connection.execute(returning_ids, rows)]
            storage._store_asset_event_tags(connection, events, ids)
            # The asset record keeps the latest event of each kind: the last one per asset.
            latest = {event.get_dagster_event().asset_key: (event, id_) for event, id_ in zip(events, ids, strict=True)}
            for event, id_ in latest.values():
                storage._store_asset_event(connection, event, id_)

    def _rows(self, events: Sequence[EventLogEntry]) -> list[dict[str, Any]]:
        """Dagster's rows for the events. The planned days of one range differ only in their
        partition: the event is serialized once with a placeholder day and the day written into
        the text, which is what serializing each gives (serialization was most of the cost)."""
        storage: Any = self
        rows: list[dict[str, Any]] = []
        template: tuple[Any, dict[str, Any]] | None = None
        for event in events:
            day = _planned_day(event)
            if day is None:
                rows.append(storage._event_to_row(event))
                continue
            dagster_event = event.get_dagster_event()
            # The per-day events of one range share everything but the day (`_per_day`).
            source = (event.run_id, event.timestamp, dagster_event.step_key, dagster_event.asset_key)
            if template is None or template[0] != source:
                template = (source, storage._event_to_row(_on_day(event, DAY_PLACEHOLDER)))
            text = template[1]["event"]
            if text.count(DAY_PLACEHOLDER_JSON) != 1:  # never seen; the plain way is always right
                rows.append(storage._event_to_row(event))
                continue
            rows.append({**template[1], "partition": day,
                         "event": text.replace(DAY_PLACEHOLDER_JSON, json.dumps(day))})
        return rows

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        # Dagster's own writes a row per planned partition and serializes the whole event (with its
        # partition subset) again for each: quadratic in the days of a range run, ~1 s per check
        # for a year of days. The same rows, the event serialized once.
        storage: Any = self
        planned = event.get_dagster_event().event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": storage._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with storage.index_connection() as connection:
            connection.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": key} for key in keys])


def _planned_range(event: EventLogEntry) -> AssetMaterializationPlannedData | None:
    """The planned materialization of a range of partitions in one event, if `event` is one."""
    if event.dagster_event_type != DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
        return None
    planned = event.get_dagster_event().event_specific_data
    return planned if planned.partitions_subset is not None else None


def _planned_day(event: EventLogEntry) -> str | None:
    """The partition of a planned materialization of one partition."""
    if event.dagster_event_type != DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
        return None
    return event.get_dagster_event().event_specific_data.partition


def _on_day(event: EventLogEntry, day: str) -> EventLogEntry:
    dagster_event = event.get_dagster_event()
    data = dagster_event.event_specific_data._replace(partition=day, partitions_subset=None)
    return event._replace(dagster_event=dagster_event._replace(event_specific_data=data))


def _per_day(events: Sequence[EventLogEntry]) -> Iterator[EventLogEntry]:
    """The events, with each range planned in one event replaced by the per-partition planned
    events Dagster emits when its storage does not take ranges: the same rows, message and
    data as those, so every reader of planned events (per-day status, the UI) sees no change."""
    for event in events:
        planned = _planned_range(event)
        if planned is None:
            yield event
            continue
        for key in planned.partitions_subset.get_partition_keys():
            yield _on_day(event, key)


def _groups(events: Sequence[EventLogEntry]) -> Iterator[tuple[list[EventLogEntry], bool]]:
    """Consecutive events of one run and one batchable type, in their order, and the others alone."""
    group: list[EventLogEntry] = []
    for event in events:
        kind = event.dagster_event_type
        if kind not in BATCHED_EVENT_TYPES:
            if group:
                yield group, True
                group = []
            yield [event], False
        elif group and (group[0].dagster_event_type != kind or group[0].run_id != event.run_id):
            yield group, True
            group = [event]
        else:
            group.append(event)
    if group:
        yield group, True


class BatchedSqliteEventLogStorage(_BatchedAssetEvents, SqliteEventLogStorage):
    """SQLite event log storage that writes a batch of a run's asset events at once."""

    RUN_EVENTS_IN_INDEX = False

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)


class BatchedPostgresEventLogStorage(_BatchedAssetEvents, PostgresEventLogStorage):
    """PostgreSQL event log storage that writes a batch of a run's asset events at once.

    dagster-postgres's own batches only materializations or observations alone, and its batch
    sends no NOTIFY (which, it says, nothing listens to any more); these batches send none either.
    """

    RUN_EVENTS_IN_INDEX = True

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> BatchedPostgresEventLogStorage:
        # PostgresEventLogStorage.from_config_value builds its own class, not `cls`.
        return cls(inst_data=inst_data, **_postgres_arguments(config_value))


def _postgres_arguments(config_value: Any) -> dict[str, Any]:
    """dagster-postgres's storage arguments from its config (`postgres_url` or `postgres_db`)."""
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class LocalSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, events, schedules under `base_dir`) with batched event writes."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        super().__init__(base_dir, inst_data)
        self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> LocalSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class BatchedPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres's storage (same config as `storage: postgres`) with batched event writes."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None, token_provider: Any = None) -> None:
        # The parent builds a stock event log storage too (one query when it starts), replaced here.
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._event_log_storage = BatchedPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> BatchedPostgresStorage:
        return cls(inst_data=inst_data, **_postgres_arguments(config_value))

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        # What the event log storage alone would be configured as: this class's, not dagster-postgres's.
        return ConfigurableClassData(__name__, BatchedPostgresEventLogStorage.__name__, self.inst_data.config_yaml) \
            if self.inst_data else None
