"""The replication's health in one place of the Dagster UI: the asset `plex_etl/replication_status`
(group `operations`), whose every materialization carries a table of every replicated table
(plex_etl/status.py says what each column means and when a table is OK, WARN or FAIL).

A sensor refreshes it every 15 minutes without a run: it reports the materialization itself
(`SensorResult(asset_events=...)`), so no run (a pod in production) is launched for it;
*Materialize* on the asset refreshes it at once, in a run. `plex-etl status` prints the same
table from a shell. The facts come from the Dagster instance: each table's latest
materialization (public `get_latest_materialization_event`) and the latest evaluation of each of
its checks (defs/dagster_private.py: no public API reads check evaluations).
"""

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

from plex_etl.catalog.plan import TIERS
from plex_etl.defs.dagster_private import latest_check_outcomes
from plex_etl.status import (
    HEADERS,
    LastLoad,
    StatusTable,
    TableStatus,
    columns,
    counts,
    ordered,
    summary,
    table_status,
)

STATUS_KEY = dg.AssetKey(["plex_etl", "replication_status"])
STATUS_GROUP = "operations"
STATUS_SENSOR = "replication_status_every_15_min"
REFRESH_SECONDS = 15 * 60
SOURCE_TAG, TIER_TAG, STRATEGY_TAG, CAPTURE_TAG = (
    "plex_etl/source", "plex_etl/tier", "plex_etl/strategy", "plex_etl/capture")
ROWS_KEYS = ("load_rows", "dagster/row_count", "rows", "rows_merged")  # the load's rows, in that order


def _timedelta(window: object) -> dt.timedelta | None:
    if window is None:
        return None
    return window if isinstance(window, dt.timedelta) else window.to_timedelta()


def status_tables(assets: Iterable[dg.AssetsDefinition], checks: Iterable[dg.AssetChecksDefinition],
                  time_zones: Mapping[str, str]) -> list[StatusTable]:
    """Every replicated table (an asset tagged with its source), as its definition says."""
    names: dict[dg.AssetKey, list[str]] = {}
    for definition in checks:
        for spec in definition.check_specs:
            names.setdefault(spec.asset_key, []).append(spec.name)
    tables = []
    for definition in assets:
        if not isinstance(definition, dg.AssetsDefinition):
            continue
        for key in definition.keys:
            spec = definition.get_asset_spec(key)
            if SOURCE_TAG not in spec.tags or "mysql_table" not in spec.metadata:
                continue  # a view, this status, or anything else that is not a replicated table
            source, table = str(spec.metadata["mysql_table"]).split(".", 1)
            tier = spec.tags[TIER_TAG]
            captured = spec.tags.get(CAPTURE_TAG) == "binlog"
            policy = spec.freshness_policy
            tables.append(StatusTable(
                source=source, table=table, asset_key=key.to_user_string(), strategy=spec.tags[STRATEGY_TAG],
                tier=tier, captured=captured,
                warn_after=_timedelta(getattr(policy, "warn_window", None)),
                fail_after=_timedelta(getattr(policy, "fail_window", None)),
                cron=None if captured else TIERS[tier], time_zone=time_zones[source],
                checks=tuple(sorted(names.get(key, []))),
            ))
    return sorted(tables, key=lambda t: (t.source, t.table))


def last_load(instance: dg.DagsterInstance, key: dg.AssetKey) -> LastLoad | None:
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if event is None or materialization is None:
        return None
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    rows = next((int(metadata[k]) for k in ROWS_KEYS if isinstance(metadata.get(k), int)), None)
    lag = metadata.get("lag_seconds")
    return LastLoad(
        at=dt.datetime.fromtimestamp(event.timestamp, dt.UTC), rows=rows,
        days=str(metadata["load_days"]) if metadata.get("load_days") else None,
        lag_seconds=float(lag) if isinstance(lag, int | float) else None,
    )


def gather(instance: dg.DagsterInstance, tables: Sequence[StatusTable], now: dt.datetime) -> list[TableStatus]:
    """Each table's status now, from what the instance recorded."""
    keys = {t.asset_key: dg.AssetKey.from_user_string(t.asset_key) for t in tables}
    outcomes = latest_check_outcomes(
        instance, [dg.AssetCheckKey(keys[t.asset_key], name) for t in tables for name in t.checks])
    return [
        table_status(t, last_load(instance, keys[t.asset_key]),
                     {k.name: o for k, o in outcomes.items() if k.asset_key == keys[t.asset_key]}, now)
        for t in tables
    ]


SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn(name, "int" if name == "rows" else "float" if name == "capture_lag_seconds" else "string",
                   description=header.lower())
    for name, header in HEADERS.items()
])


def _unbroken(row: dict) -> dict:
    """Short cells ("12-04 14:29", "WARN: 7h 00m") kept on one line in the UI's narrow table."""
    return {k: v.replace(" ", "\u00a0") if isinstance(v, str) and len(v) <= 16 else v for k, v in row.items()}


def status_metadata(statuses: Sequence[TableStatus], now: dt.datetime) -> dict[str, dg.MetadataValue]:
    """The materialization's metadata: the table, worst first; the counts, plotted over time; why
    each table that is not OK is not."""
    n = counts(statuses)
    problems = [f"- **{s.name}** ({s.state}): {'; '.join(s.reasons)}" for s in ordered(statuses) if s.reasons]
    return {
        "summary": dg.MetadataValue.text(summary(statuses)),
        "tables": dg.MetadataValue.table(
            records=[dg.TableRecord(data=_unbroken(columns(s))) for s in ordered(statuses)], schema=SCHEMA),
        "problems": dg.MetadataValue.md("\n".join(problems) if problems else "Every table is OK."),
        "tables_fail": dg.MetadataValue.int(n["FAIL"]),
        "tables_warn": dg.MetadataValue.int(n["WARN"]),
        "tables_ok": dg.MetadataValue.int(n["OK"]),
        "as_of": dg.MetadataValue.timestamp(now.timestamp()),
    }


DESCRIPTION = (
    "Every replicated table in one table: its state (OK, WARN, FAIL), strategy and tier, last load and its "
    "rows, freshness against its tier, last reconciliation with MySQL, failing checks, next refresh and, for "
    "captured tables, the capture's lag.\n\n"
    "Refreshed every 15 minutes by the sensor replication_status_every_15_min, and at once by Materialize. "
    "The table is in the latest materialization's metadata (tables); plex-etl status prints the same."
)


def build_status(tables: Sequence[StatusTable]) -> tuple[dg.AssetsDefinition, dg.SensorDefinition]:
    """The status asset and the sensor that refreshes it."""

    @dg.asset(key=STATUS_KEY, group_name=STATUS_GROUP, description=DESCRIPTION, kinds={"dagster"},
              tags={"plex_etl/role": "status"})
    def _status(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        now = dt.datetime.now(dt.UTC)
        statuses = gather(context.instance, tables, now)
        context.log.info(summary(statuses))
        return dg.MaterializeResult(metadata=status_metadata(statuses, now))

    @dg.sensor(name=STATUS_SENSOR, minimum_interval_seconds=REFRESH_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Refreshes {STATUS_KEY.to_user_string()} every 15 minutes (a materialization "
                           "reported by the sensor itself: no run).")
    def _refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = dt.datetime.now(dt.UTC)
        statuses = gather(context.instance, tables, now)
        # The tick shows as skipped (no run requested): its message says what was reported.
        return dg.SensorResult(
            asset_events=[dg.AssetMaterialization(asset_key=STATUS_KEY, description=summary(statuses),
                                                  metadata=status_metadata(statuses, now))],
            skip_reason=f"reported {STATUS_KEY.to_user_string()}: {summary(statuses)}")

    return _status, _refresh
