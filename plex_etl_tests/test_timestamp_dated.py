"""A table dated by a TIMESTAMP column is partitioned by its UTC day (docs/design-notes.md), in a
source whose time zone is not UTC: rows near midnight land in exactly one partition, with
their instant intact, and the blocking checks pass."""

import datetime as dt
from pathlib import Path

import yaml

from plex_etl_tests.replication import build_defs, materialize
from plex_etl_tests.test_schema_evolution import SOURCE, scratch_source

DAY = dt.date.today() - dt.timedelta(days=10)  # inside the rolling window of daily partitions
PLAN = f"""\
defaults:
  first_day: {DAY - dt.timedelta(days=9)}
tables:
  eventos: {{strategy: event, date_columns: [registrado], tier: standard}}
"""


def test_timestamp_dated_table_partitions_by_utc_day(monkeypatch, tmp_path: Path):
    scratch = scratch_source(
        monkeypatch, tmp_path, "timestamp_dated",
        "CREATE TABLE eventos (id INT PRIMARY KEY, registrado TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "nota VARCHAR(10), KEY (registrado))",
        "SET time_zone = '+00:00'",
        # 01:30 UTC on DAY is 22:30 of the day before in Buenos Aires; 23:30 UTC is 20:30 the same day.
        f"INSERT INTO eventos VALUES (1, '{DAY} 01:30:00', 'early'), (2, '{DAY} 23:30:00', 'late'), "
        f"(3, '{DAY - dt.timedelta(days=1)} 23:59:59', 'before')",
    )
    sources = yaml.safe_load((scratch.config / "sources.yaml").read_text())
    sources["sources"][SOURCE]["time_zone"] = "America/Argentina/Buenos_Aires"
    (scratch.config / "sources.yaml").write_text(yaml.safe_dump(sources))
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(PLAN)
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("PLEX_ETL_DATASET", "stamped")
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)

    defs = build_defs()
    result = materialize(defs, [f"{SOURCE}/eventos"], DAY)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    from plex_etl.warehouse.local import LocalWarehouse

    rows = LocalWarehouse(warehouse).query(
        "SELECT id, registrado, _etl_partition_date AS day FROM stamped.scratch_eventos ORDER BY id"
    ).to_pylist()
    assert [(r["id"], r["day"]) for r in rows] == [(1, DAY), (2, DAY)]  # UTC days, not local ones
    utc = dt.UTC
    assert [r["registrado"].astimezone(utc) for r in rows] == [
        dt.datetime.combine(DAY, dt.time(1, 30), tzinfo=utc), dt.datetime.combine(DAY, dt.time(23, 30), tzinfo=utc)
    ]
    before = materialize(defs, [f"{SOURCE}/eventos"], DAY - dt.timedelta(days=1))
    assert before.success
    counts = LocalWarehouse(warehouse).count_by_partition("stamped", "scratch_eventos", None, None)
    assert counts == {DAY - dt.timedelta(days=1): 1, DAY: 2}
