"""One load, as a plain function: a partition stream goes into the warehouse, figures come back.

`replicate_partition(warehouse, stream)` is the whole hand-over between the extraction and
the warehouse: it consumes the stream chunk by chunk (the warehouse swaps the rows in
atomically at the end), keeps a snapshot table's history within its retention window and
its `<table>_latest` view, and returns a `PartitionLoad` with every figure the checks
and the run metadata need. Nothing is mutated behind the caller's back: the Dagster IO
manager turns the returned figures into materialization metadata, and the checks read
them from there. No Dagster import here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from plex_etl.catalog.drift import ColumnDrift
from plex_etl.catalog.naming import latest_view
from plex_etl.extract.spec import ReplicatedTable, load_mode
from plex_etl.extract.stream import PartitionStream
from plex_etl.warehouse.base import LoadResult, Warehouse
from plex_etl.warehouse.queries import latest_view_sql


@dataclass(frozen=True)
class PartitionLoad:
    """What one load did: the warehouse's figures and the MySQL side's, for the same days."""

    table: str  # dataset.table in the warehouse
    start: dt.date | None  # first day read and replaced (None: open, the first partition)
    end: dt.date | None  # last day read and replaced (None: open, today with future-dated rows)
    load: LoadResult
    mysql_counts: Mapping[dt.date, int]  # rows per day, counted in the read's MySQL snapshot
    read_seconds: float
    fixes: Mapping[str, int] = field(default_factory=dict)  # value fixes by kind (typemap.FIXES)
    snapshot_rows_expired: int | None = None  # snapshots only: rows beyond the retention window
    drift: ColumnDrift = field(default_factory=ColumnDrift)  # MySQL's columns against the catalog's
    primary_key: tuple[str, ...] = ()  # the warehouse table's (retired columns are carried by it)

    @property
    def mysql_rows(self) -> int:
        return sum(self.mysql_counts.values())

    @property
    def seconds(self) -> float:
        return max(self.load.seconds, self.read_seconds, 1e-9)


def replicate_partition(warehouse: Warehouse, stream: PartitionStream) -> PartitionLoad:
    """Load `stream` (days [stream.start, stream.end] of one table) into `warehouse`."""
    spec = stream.spec
    result = warehouse.load(spec.target, stream, stream.start, stream.end, mode=load_mode(spec),
                            merge_outside=stream.merges_outside_range)
    expired = keep_snapshots(warehouse, spec, stream.end) if spec.plan.strategy == "snapshot" else None
    return PartitionLoad(
        table=spec.target.qualified_name,
        start=stream.start,
        end=stream.end,
        load=result,
        mysql_counts=dict(stream.snapshot_counts),
        read_seconds=stream.seconds,
        fixes=dict(stream.fixes),
        snapshot_rows_expired=expired,
        drift=spec.drift,
        primary_key=spec.target.primary_key,
    )


def keep_snapshots(warehouse: Warehouse, spec: ReplicatedTable, day: dt.date | None) -> int:
    """Expire snapshots older than the retention window before `day` and (re)create the
    `<table>_latest` view; rows deleted."""
    target = spec.target
    if day is None:
        raise ValueError(f"{target.qualified_name}: a snapshot load has a day")
    cutoff = day - dt.timedelta(days=spec.retention_days)
    expired = warehouse.delete_partitions_before(target.dataset, target.name, cutoff)
    warehouse.create_view(target.dataset, latest_view(target.name), latest_view_sql(target.dataset, target.name, day))
    return expired
