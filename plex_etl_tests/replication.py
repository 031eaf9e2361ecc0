"""Helpers for replication tests: definitions pointed at the test databases, MySQL truth."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa

from plex_etl.sources import Source


def point_at_test_databases(monkeypatch, demo_sources: dict[str, Source], warehouse: Path) -> None:
    monkeypatch.setenv("PLEX_MYSQL_DATABASE", demo_sources["plex"].database)
    monkeypatch.setenv("QUANTIO_MYSQL_DATABASE", demo_sources["quantio"].database)
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(warehouse))
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")


def build_defs() -> dg.Definitions:
    from plex_etl.definitions import build_definitions

    return build_definitions()


def materialize(
    defs: dg.Definitions,
    keys: list[str],
    start: dt.date | None,
    end: dt.date | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """One run over the partitions [start, end] of the selected assets (a single-run backfill);
    `start=None` for unpartitioned assets."""
    end = end or start
    tags = {}
    partition_key = None
    if start is None:
        pass
    elif start == end:
        partition_key = start.isoformat()
    else:
        tags = {
            "dagster/asset_partition_range_start": start.isoformat(),
            "dagster/asset_partition_range_end": end.isoformat(),
        }
    assets = list(defs.assets or [])
    return dg.materialize(
        assets,
        selection=[dg.AssetKey.from_user_string(k) for k in keys],
        partition_key=partition_key,
        tags=tags,
        resources=defs.resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def mysql_rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(sql))]


def sorted_rows(table: pa.Table, drop: tuple[str, ...] = ("_etl_loaded_at",)) -> list[tuple]:
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return sorted(tuple(row.values()) for row in table.to_pylist())
