"""Helpers for replication tests: definitions pointed at the test databases, MySQL truth."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa

from plex_etl.sources import Source


def point_at_test_databases(
    monkeypatch,
    demo_sources: dict[str, Source],
    warehouse: Path | None = None,
    *,
    bigquery_endpoint: str | None = None,
    project: str = "test-project",
    dataset: str | None = None,
) -> None:
    """Sources at the test databases; the warehouse is the local DuckDB file `warehouse`, or
    BigQuery at `bigquery_endpoint` (an emulator) in `project`; `dataset` overrides the default."""
    monkeypatch.setenv("PLEX_MYSQL_DATABASE", demo_sources["plex"].database)
    monkeypatch.setenv("QUANTIO_MYSQL_DATABASE", demo_sources["quantio"].database)
    if dataset is not None:
        monkeypatch.setenv("PLEX_ETL_DATASET", dataset)
    if bigquery_endpoint is None:
        if warehouse is None:
            raise ValueError("a local warehouse file or a BigQuery endpoint is needed")
        monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(warehouse))
        monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
        monkeypatch.delenv("PLEX_ETL_BIGQUERY_ENDPOINT", raising=False)
        monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    else:
        monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "bigquery")
        monkeypatch.setenv("PLEX_ETL_GCP_PROJECT", project)
        monkeypatch.setenv("PLEX_ETL_BIGQUERY_ENDPOINT", bigquery_endpoint)
        monkeypatch.setenv("PLEX_ETL_BIGQUERY_LOCATION", "US")


def build_defs(request_timeout_seconds: float | None = None) -> dg.Definitions:
    """The code location's definitions from the current environment; `request_timeout_seconds`
    makes BigQuery calls give up after that long (an emulator bug otherwise looks like a hang)."""
    from plex_etl.definitions import build_definitions

    defs = build_definitions()
    if request_timeout_seconds is None:
        return defs
    resources = dict(defs.resources)
    warehouse = resources["warehouse"].model_copy(update={"request_timeout_seconds": request_timeout_seconds})
    resources.update(warehouse=warehouse)  # the IO manager writes through the `warehouse` resource
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, sensors=defs.sensors, schedules=defs.schedules,
        jobs=defs.jobs, resources=resources,
    )


def materialize(
    defs: dg.Definitions,
    keys: list[str],
    start: dt.date | None,
    end: dt.date | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """One run over the partitions [start, end] of the selected assets (a single-run backfill);
    `start=None` for unpartitioned assets. Days are ignored when every selected asset is
    unpartitioned (snapshot tables, views). A `start` before the rolling window of partitions
    is its first partition, which loads those days too (the whole history)."""
    end = end or start
    tags = {}
    partition_key = None
    selected = [dg.AssetKey.from_user_string(k) for k in keys]
    partitioned = [d.partitions_def for d in (defs.get_assets_def(k) for k in selected) if d.partitions_def]
    if not partitioned:
        start = None
    elif start is not None:
        start = max(start, dt.date.fromisoformat(partitioned[0].get_first_partition_key()))
    if start is None:
        pass
    elif start == end:
        partition_key = start.isoformat()
    else:
        tags = {
            "dagster/asset_partition_range_start": start.isoformat(),
            "dagster/asset_partition_range_end": end.isoformat(),
        }
    return dg.materialize(
        [*(defs.assets or []), *table_checks(defs)],
        selection=selected,
        partition_key=partition_key,
        tags=tags,
        resources=defs.resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
        # A failure shows at once, without the assets' retry delays (test_deploy checks the policy).
        run_config={"execution": {"config": {"retries": {"disabled": {}}}}},
    )


def table_checks(defs: dg.Definitions) -> list[dg.AssetChecksDefinition]:
    """Each table's two blocking checks (not the orphan and whole-table reconciliation checks)."""
    from plex_etl.defs.checks import ROW_COUNT_CHECK, SCHEMA_CHECK

    return [
        c for c in defs.asset_checks or []
        if {k.name for k in c.check_keys} <= {SCHEMA_CHECK, ROW_COUNT_CHECK}
    ]


def mysql_rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(sql))]


def sorted_rows(table: pa.Table, drop: tuple[str, ...] = ("_etl_loaded_at",)) -> list[tuple]:
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return sorted(tuple(row.values()) for row in table.to_pylist())


def accept_proposals(config: Path) -> None:
    """Accept every proposed plan entry in a config directory, as a reviewer does (proposed
    entries do not load)."""
    for plan in config.glob("*.plan.yaml"):
        plan.write_text(plan.read_text().replace("    proposed: true\n", ""))


def load_like_the_demo(defs: dg.Definitions, instance: dg.DagsterInstance, sources: tuple[str, ...],
                       today: dt.date, reconcile: str = "quantio") -> None:
    """What `make demo` loads of `sources` (every table's last 7 days, today's snapshots) into
    `instance`, then the reconciliation checks of `reconcile` (its older days are not loaded:
    they differ)."""
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.defs.checks import RECONCILE_CHECK

    for source in sources:
        _, plan = load_source_catalog(source)
        snapshots = [f"{source}/{p.table}" for p in plan.included if p.strategy == "snapshot"]
        dated = [f"{source}/{p.table}" for p in plan.included if p.strategy != "snapshot"]
        assert materialize(defs, snapshots, None, instance=instance).success
        assert materialize(defs, dated, today - dt.timedelta(days=6), today, instance=instance).success
    checks = [k for c in defs.asset_checks or [] for k in c.check_keys
              if k.name == RECONCILE_CHECK and k.asset_key.path[0] == reconcile]
    dg.materialize([*defs.assets, *defs.asset_checks], selection=dg.AssetSelection.checks(*checks),
                   resources=defs.resources, instance=instance, raise_on_error=False)
