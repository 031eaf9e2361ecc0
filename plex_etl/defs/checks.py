"""Asset checks: the warehouse agrees with the catalog (schema), with MySQL (row counts) and
with itself (no child row without its parent)."""

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from plex_etl.catalog.drift import ColumnDrift, SchemaDriftError
from plex_etl.catalog.model import Catalog, Relationship
from plex_etl.catalog.plan import SourcePlan
from plex_etl.defs.automation import RECONCILE_CRON, reconcile_condition
from plex_etl.defs.dagster_private import AUTOMATION_RUN_TAG, BACKFILL_RUN_TAG, run_event_records
from plex_etl.defs.io_manager import LOAD_FIRST_DAY, LOAD_LAST_DAY, MYSQL_COUNTS, SCHEMA_DRIFT, within
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import MySQLResource, WarehouseResource
from plex_etl.extract.spec import ReplicatedTable, live_replicated_table, replicated_table, warehouse_table_name
from plex_etl.extract.sql import rows_by_key_query
from plex_etl.extract.stream import describe_days
from plex_etl.orphans import MAX_KEYS, Candidate, judge, parent_partitions
from plex_etl.reconcile import error_text, reconcile_table, value_coverage
from plex_etl.sources import Source
from plex_etl.status import RECONCILE_CHECK
from plex_etl.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN, Warehouse
from plex_etl.warehouse.queries import latest_partition, orphan_query

SCHEMA_CHECK = "schema_matches_catalog"
ROW_COUNT_CHECK = "row_count_matches_mysql"


def expected_columns(spec: ReplicatedTable, kind: str) -> dict[str, str]:
    """The warehouse table's columns and types as the catalog maps them, bookkeeping included."""
    columns = {
        c.name: (c.bigquery_type if kind == "bigquery" else c.local_type) for c in spec.target.columns
    }
    columns[PARTITION_COLUMN] = "DATE"
    columns[LOADED_AT_COLUMN] = "TIMESTAMP" if kind == "bigquery" else "TIMESTAMP WITH TIME ZONE"
    return columns


def schema_problems(warehouse: Warehouse, spec: ReplicatedTable) -> tuple[list[str], list[str], list[str]]:
    """Missing, extra (retired) and retyped columns of the warehouse table against `spec`.

    Strict: both sides are spelled by the warehouse's own `normalize_type` and must be equal
    (INTEGER is not BIGINT, FLOAT is not DOUBLE).
    """
    actual = warehouse.columns(spec.target.dataset, spec.target.name) or {}
    expected = expected_columns(spec, warehouse.kind)
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    retyped = [
        f"{c}: {actual[c]} (expected {warehouse.normalize_type(expected[c])})"
        for c in expected
        if c in actual and warehouse.normalize_type(actual[c]) != warehouse.normalize_type(expected[c])
    ]
    return missing, extra, retyped


def schema_check(warehouse: Warehouse, spec: ReplicatedTable, key: dg.AssetKey) -> dg.AssetCheckResult:
    """The warehouse table has exactly the columns and types the last load replicated: the
    catalog's mapped columns, as MySQL had them at that load (`spec.drift`: new columns added,
    dropped ones no longer written). A column the loads no longer write stays with its history
    (retired) and is named. Fails (ERROR) on a missing or retyped column; fails as a WARN when a
    new MySQL column could not be replicated (type not supported) or a column's type changed in
    MySQL (the catalog's type is still read); passes otherwise, naming what `discover` should
    record."""
    missing, retired, retyped = schema_problems(warehouse, spec)
    drift = spec.drift
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if retyped:
        problems.append(f"retyped columns: {'; '.join(retyped)}")
    warnings = []
    if drift.skipped:
        warnings.append("new in MySQL, NOT replicated (type not supported): " + "; ".join(
            f"{c.name} ({c.column_type}): {c.reason}" for c in drift.skipped))
    if drift.retyped:
        warnings.append("type changed in MySQL, still loaded as the catalog maps it: " + "; ".join(drift.retyped)
                        + ". After `discover` the load refuses the new type until the warehouse column is renamed "
                        "or dropped (docs/design-notes.md, schema evolution)")
    notes = []
    if drift.added:
        notes.append("new in MySQL, replicated since (earlier rows NULL until their days reload): "
                     + ", ".join(f"{c.name} ({c.column_type})" for c in drift.added))
    if retired:
        dropped = [c for c in retired if c in drift.dropped]
        notes.append(f"retired (not written by loads any more, history kept): {', '.join(retired)}"
                     + (f"; dropped in MySQL: {', '.join(dropped)}" if dropped else ""))
    if not drift.empty:
        notes.append(f"run `plex-etl discover --source {spec.source}` so the committed catalog records it")
    expected = len(spec.target.columns) + 2
    severity = dg.AssetCheckSeverity.ERROR if problems or not warnings else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=SCHEMA_CHECK,
        passed=not problems and not warnings,
        severity=severity,
        description="; ".join(problems + warnings + notes) if problems or warnings else
        "; ".join([f"{expected} columns as replicated", *notes]),
        metadata={
            "missing_columns": dg.IntMetadataValue(len(missing)),
            "retyped_columns": dg.IntMetadataValue(len(retyped)),
            "new_columns": dg.TextMetadataValue(", ".join(c.name for c in drift.added) or "none"),
            "retired_columns": dg.TextMetadataValue(", ".join(retired) or "none"),
            "skipped_columns": dg.TextMetadataValue(", ".join(c.name for c in drift.skipped) or "none"),
            "problems": dg.TextMetadataValue("\n".join(problems + warnings) or "none"),
        },
    )


@dataclass(frozen=True)
class LoadFigures:
    """What a materialization's metadata says about its load (written by defs/io_manager.py)."""

    mysql_counts: dict[dt.date, int]
    start: dt.date | None
    end: dt.date | None
    drift: ColumnDrift = field(default_factory=ColumnDrift)  # MySQL's columns against the catalog's, then

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "LoadFigures | None":
        if MYSQL_COUNTS not in metadata:
            return None

        def day(name: str) -> dt.date | None:
            text = metadata[name].value if name in metadata else ""
            return dt.date.fromisoformat(text) if text else None

        counts = metadata[MYSQL_COUNTS].value or {}
        drift = ColumnDrift.from_json(metadata[SCHEMA_DRIFT].value if SCHEMA_DRIFT in metadata else None)
        return cls({dt.date.fromisoformat(d): int(n) for d, n in counts.items()}, day(LOAD_FIRST_DAY),
                   day(LOAD_LAST_DAY), drift)


def row_count_check(warehouse: Warehouse, spec: ReplicatedTable, figures: LoadFigures, key: dg.AssetKey,
                    ) -> dg.AssetCheckResult:
    """Rows landed per day equal the MySQL count taken in the extraction's snapshot, for the days
    the load replaced. Rows read for their new keys but dated on other days were merged by key
    into days that hold rows this load did not read: the whole-table reconciliation judges those."""
    target = spec.target
    landed = warehouse.count_by_partition(target.dataset, target.name, figures.start, figures.end)
    expected = {d: n for d, n in figures.mysql_counts.items() if within(d, figures.start, figures.end)}
    days = sorted(set(landed) | set(expected))
    mismatches = [
        f"{d}: MySQL {expected.get(d, 0):,}, warehouse {landed.get(d, 0):,}"
        for d in days
        if expected.get(d, 0) != landed.get(d, 0)
    ]
    mysql_rows, warehouse_rows = sum(expected.values()), sum(landed.values())
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=ROW_COUNT_CHECK,
        passed=not mismatches,
        description="; ".join(mismatches[:10]) or f"{mysql_rows:,} rows in MySQL and in the warehouse",
        metadata={
            "mysql_rows": dg.IntMetadataValue(mysql_rows),
            "warehouse_rows": dg.IntMetadataValue(warehouse_rows),
            "difference": dg.IntMetadataValue(warehouse_rows - mysql_rows),
            "days_checked": dg.TextMetadataValue(describe_days(figures.start, figures.end)),
            "partitions_mismatched": dg.IntMetadataValue(len(mismatches)),
        },
    )


def table_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            SCHEMA_CHECK, asset=key, blocking=True,
            description="warehouse columns and types equal the catalog's mapped schema (strict)",
        ),
        dg.AssetCheckSpec(
            ROW_COUNT_CHECK, asset=key, blocking=True,
            description="rows landed per day equal the rows read per day in the extraction's MySQL snapshot",
        ),
    ]


def run_materialization(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dg.AssetMaterialization | None:
    """The asset's last materialization in this run, else its latest one (a checks-only run).

    The latest one is this run's unless another run loaded the table in between; only then are
    this run's events read (a range run has one materialization per day and table: reading them
    all for every table cost minutes on a two-year load).
    """
    latest = context.instance.get_latest_materialization_event(key)
    if latest is not None and (latest.run_id == context.run.run_id or key not in (context.run.asset_selection or ())):
        return latest.asset_materialization
    records = run_event_records(context.instance, context.run.run_id, {dg.DagsterEventType.ASSET_MATERIALIZATION})
    for record in reversed(records):
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == key:
            return materialization
    return latest.asset_materialization if latest else None


def build_table_checks(source: str, catalog: Catalog, plan: SourcePlan, table: str) -> dg.AssetChecksDefinition:
    """The two blocking checks of one table, in their own step after the load.

    They read the load's MySQL figures from the materialization's metadata (see
    defs/io_manager.py) and the warehouse's from the warehouse: nothing is handed over in memory.
    """
    key = table_key(source, catalog, table)

    @dg.multi_asset_check(
        name=f"{key.to_python_identifier()}_checks", specs=table_check_specs(key), can_subset=True,
    )
    def _table_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get()
        selected = {k.name for k in context.selected_asset_check_keys}
        materialization = run_materialization(context, key)
        figures = LoadFigures.from_metadata(materialization.metadata) if materialization else None
        # The table as the last load replicated it (its columns as MySQL had them then).
        drift = figures.drift if figures else None
        spec = replicated_table(catalog, plan, table, dataset=warehouse.dataset, drift=drift)
        if SCHEMA_CHECK in selected:
            yield schema_check(store, spec, key)
        if ROW_COUNT_CHECK in selected:
            if figures is None:
                yield dg.AssetCheckResult(
                    asset_key=key, check_name=ROW_COUNT_CHECK, passed=False,
                    description=f"{source}.{table} has no load to compare yet: materialize it first",
                )
            else:
                yield row_count_check(store, spec, figures, key)

    return _table_checks


def orphan_check_name(relationship: Relationship) -> str:
    return "no_orphans_" + re.sub(r"[^A-Za-z0-9_]", "_", relationship.name)


def build_orphan_checks(source: Source, catalog: Catalog, plan: SourcePlan) -> dg.AssetChecksDefinition | None:
    """One check per relationship between replicated tables: child rows without their parent row
    although the warehouse should hold it (plex_etl/orphans.py says when it should).

    Warnings, not blocking: even a real orphan may be a parent loaded a moment later than its child.
    """
    replicated = {p.table for p in plan.included}
    relationships = [
        r for r in sorted(catalog.relationships, key=lambda r: (r.table, r.name))
        if r.table in replicated and r.referenced_table in replicated and not r.self_referencing
    ]
    if not relationships:
        return None
    keys = {t: table_key(source.name, catalog, t) for t in replicated}
    specs = {
        orphan_check_name(r): (
            r,
            dg.AssetCheckSpec(
                orphan_check_name(r),
                asset=keys[r.table],
                additional_deps=[keys[r.referenced_table]],
                description=f"every {r.table}({', '.join(r.columns)}) has its {r.referenced_table} row "
                f"({'inferred' if r.inferred else 'declared'} relationship {r.name}) once the warehouse should "
                "hold it: MySQL has it and its day was loaded since",
            ),
        )
        for r in relationships
    }

    @dg.multi_asset_check(
        name=f"{source.name}_orphan_checks", specs=[spec for _, spec in specs.values()], can_subset=True
    )
    def _orphans(context: dg.AssetCheckExecutionContext, mysql: MySQLResource, warehouse: WarehouseResource):
        store = warehouse.get()
        with contextlib.ExitStack() as stack:
            connection = Lazy(lambda: stack.enter_context(mysql.connect(source.name)))
            for check_key in context.selected_asset_check_keys:
                rel, _ = specs[check_key.name]
                yield orphan_result(context.instance, store, warehouse.dataset, connection, catalog, plan, source,
                                    rel, check_key, keys[rel.referenced_table])

    return _orphans


class Lazy:
    """A value made on first use: a MySQL connection only for the checks that find candidates."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._value: Any = None

    def get(self) -> Any:
        if self._value is None:
            self._value = self._make()
        return self._value


def partition_loaded_at(instance: dg.DagsterInstance, key: dg.AssetKey) -> Callable[[str], dt.datetime | None]:
    """When the last load of each partition of a table began to read MySQL ("": an unpartitioned
    snapshot's latest load): its materialization's time less the load's `seconds`."""
    cache: dict[str, dt.datetime | None] = {}

    def loaded_at(partition: str) -> dt.datetime | None:
        if partition not in cache:
            if partition:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
                event = records[0].event_log_entry if records else None
            else:
                event = instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event else None
            if event is None or materialization is None:
                cache[partition] = None
            else:
                seconds = materialization.metadata.get("seconds")
                began = event.timestamp - (float(seconds.value) if seconds is not None else 0.0)
                cache[partition] = dt.datetime.fromtimestamp(began, dt.UTC)
        return cache[partition]

    return loaded_at


def _utc(value: Any) -> dt.datetime:
    """A warehouse TIMESTAMP as an aware UTC datetime (DuckDB gives naive UTC or aware values)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def orphan_result(
    instance: dg.DagsterInstance, store: Warehouse, dataset: str, connection: Lazy, catalog: Catalog,
    plan: SourcePlan, source: Source, rel: Relationship, check_key: dg.AssetCheckKey, parent_key: dg.AssetKey,
) -> dg.AssetCheckResult:
    child, parent = catalog.table(rel.table), catalog.table(rel.referenced_table)
    child_table, parent_table = warehouse_table_name(source.name, child), warehouse_table_name(source.name, parent)
    missing = [t for t in (child_table, parent_table) if store.columns(dataset, t) is None]
    if missing:
        # Not a failure: nothing can be judged until both tables have landed once.
        return dg.AssetCheckResult(
            asset_key=check_key.asset_key, check_name=check_key.name, passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"not judged yet: {', '.join(missing)} not loaded yet",
            metadata={"judged": dg.BoolMetadataValue(False),
                      "not_loaded_yet": dg.TextMetadataValue(", ".join(missing))},
        )
    names = {c.name: c.warehouse_name or c.name for c in (*child.columns, *parent.columns)}
    columns = tuple(names[c] for c in rel.columns)
    snapshot = plan.tables[rel.referenced_table].strategy == "snapshot"
    query = orphan_query(
        dataset, child_table, columns, parent_table, tuple(names[c] for c in rel.referenced_columns),
        keys=MAX_KEYS, parent_latest=latest_partition(store, dataset, parent_table) if snapshot else None,
    )
    total = int(store.query(query.count_sql).column(0)[0].as_py())
    candidates = [
        Candidate(tuple(row[c] for c in columns), int(row["child_rows"]), _utc(row["landed"]))
        for row in (store.query(query.keys_sql).to_pylist() if total else [])
    ]
    found: dict = {}
    if candidates:
        import sqlalchemy as sa

        today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
        spec = replicated_table(catalog, plan, rel.referenced_table, dataset=dataset)
        found = parent_partitions(
            lambda sql, params: connection.get().execute(sa.text(sql), params).all(),
            lambda n: rows_by_key_query(spec, rel.referenced_columns, n),
            [c.key for c in candidates], plan.first_partition(today), today,
        )
    judgement = judge(rel.table, rel.referenced_table, rel.columns, total, candidates, found,
                      partition_loaded_at(instance, parent_key))
    return dg.AssetCheckResult(
        asset_key=check_key.asset_key,
        check_name=check_key.name,
        passed=not judgement.orphans,
        severity=dg.AssetCheckSeverity.WARN,
        description=judgement.describe()[:2000],
        metadata={
            "judged": dg.BoolMetadataValue(True),
            "orphans": dg.IntMetadataValue(judgement.orphan_rows),
            "waiting_for_parent": dg.IntMetadataValue(judgement.waiting_rows),
            "missing_in_mysql_too": dg.IntMetadataValue(judgement.missing_rows),
            "not_classified": dg.IntMetadataValue(judgement.unclassified_rows),
            "examples": dg.TextMetadataValue(judgement.examples() or "none"),
        },
    )


def build_reconcile_checks(source: Source, catalog: Catalog, plan: SourcePlan) -> dg.AssetChecksDefinition | None:
    """One check per table: the whole table, day by day, in MySQL and in the warehouse
    (counts, key hashes and the hashes of every value; `plex_etl.reconcile`). Run daily off-peak by
    its own condition, by the job `<source>_reconciliation` or from a table's Checks tab; never
    with a load of its table. A table that cannot be compared fails its own check, not the others'.

    Fails (ERROR) when a day the next tick will not reload differs: a hard delete, a row
    moved out of reach, a day missed by an outage. A difference only within the table's
    lookback window (rows changed since the last load, reloaded at the next tick) fails
    as a WARN, so the check never passes while the two differ.
    """
    tables = sorted(p.table for p in plan.included)
    if not tables:
        return None
    specs = {
        t: dg.AssetCheckSpec(
            RECONCILE_CHECK, asset=table_key(source.name, catalog, t),
            description="the whole table equals MySQL: the rows, primary keys and values of every day, "
            "including undated, old and future-dated rows",
            automation_condition=reconcile_condition(source.time_zone),
        )
        for t in tables
    }
    by_key = {spec.key: t for t, spec in specs.items()}

    @dg.multi_asset_check(name=f"{source.name}_reconciliation_checks", specs=list(specs.values()), can_subset=True)
    def _reconcile(context: dg.AssetCheckExecutionContext, mysql: MySQLResource, warehouse: WarehouseResource):
        selected = [k for k in context.selected_asset_check_keys if not rides_along(context.run, k)]
        riding = sorted({k.asset_key.to_user_string() for k in context.selected_asset_check_keys} - {
            k.asset_key.to_user_string() for k in selected})
        if riding:
            context.log.info(
                f"{RECONCILE_CHECK} not run for {', '.join(riding)}: this run loads them, and the whole-table "
                f"comparison runs on its own (daily at {RECONCILE_CRON}, the job {source.name}_reconciliation, "
                "or the table's Checks tab)"
            )
        if not selected:
            return
        store = warehouse.get()
        today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
        with mysql.connect(source.name) as connection:
            for check_key in sorted(selected, key=lambda k: k.asset_key.to_user_string()):
                table = by_key[check_key]
                try:  # the columns MySQL has now, as the loads read them (catalog/drift.py)
                    spec = live_replicated_table(connection, catalog, plan, table, dataset=warehouse.dataset)
                    evaluation = reconcile_result(connection, store, spec, plan, check_key, today)
                except SchemaDriftError as exc:
                    yield dg.AssetCheckResult(asset_key=check_key.asset_key, check_name=check_key.name, passed=False,
                                              description=str(exc)[:2000])
                    continue
                except Exception as exc:  # one table that cannot be compared must not hide the others
                    with contextlib.suppress(Exception):
                        connection.rollback()  # the next table's queries start clean
                    context.log.error(f"{source.name}.{table}: cannot compare: {error_text(exc)}")
                    yield dg.AssetCheckResult(
                        asset_key=check_key.asset_key, check_name=check_key.name, passed=False,
                        severity=dg.AssetCheckSeverity.ERROR,
                        description=f"{source.name}.{table}: cannot compare: {error_text(exc)}"[:2000],
                        metadata={"error": dg.TextMetadataValue(error_text(exc))},
                    )
                    continue
                context.log.info(evaluation.description or "")
                yield evaluation

    return _reconcile


def rides_along(run: dg.DagsterRun, check: dg.AssetCheckKey) -> bool:
    """Whether `check` is in `run` only because the run loads its table: `dagster asset
    materialize`, the UI's Materialize and every backfill's runs (a tier tick's included) select
    all checks of the tables they load. It runs when its own condition requested it (automation
    names it in a run of its own, or beside its table's load when both are due in one tick), from
    the job `<source>_reconciliation` and from the Checks tab (runs that load nothing)."""
    if check.asset_key not in (run.asset_selection or ()):
        return False
    by_its_condition = (run.tags.get(AUTOMATION_RUN_TAG) == "true" and BACKFILL_RUN_TAG not in run.tags
                        and check in (run.asset_check_selection or ()))
    return not by_its_condition


def reconcile_result(connection: Any, store: Warehouse, spec: ReplicatedTable, plan: SourcePlan,
                     check_key: dg.AssetCheckKey, today: dt.date) -> dg.AssetCheckResult:
    """The whole-table comparison of one table as the result of its `warehouse_equals_mysql`."""
    result = reconcile_table(connection, store, spec, today, value_coverage(plan, spec, today))
    settled = result.differences_before(today - dt.timedelta(days=plan.lookback_for(spec.plan) - 1))
    return dg.AssetCheckResult(
        asset_key=check_key.asset_key,
        check_name=check_key.name,
        passed=result.equal,
        severity=dg.AssetCheckSeverity.ERROR if settled or result.equal else dg.AssetCheckSeverity.WARN,
        description=result.describe()[:2000],
        metadata={
            "mysql_rows": dg.IntMetadataValue(result.mysql_rows),
            "warehouse_rows": dg.IntMetadataValue(result.warehouse_rows),
            "days_differing": dg.IntMetadataValue(len(result.differences)),
            "days_differing_before_lookback": dg.IntMetadataValue(len(settled)),
            "keys_compared": dg.BoolMetadataValue(result.keys_compared),
            "compared": dg.TextMetadataValue(result.basis),
            "values_compared_on": dg.TextMetadataValue(result.values),
            "value_differences_named": dg.IntMetadataValue(len(result.changed_values)),
            "value_differences": dg.TextMetadataValue(
                "\n".join(v.describe() for v in result.changed_values) or "none"),
            "partitions_to_reload": dg.TextMetadataValue(
                ", ".join(str(d) for d in result.partitions_to_reload(today)) or "none"
            ),
            "repair": dg.TextMetadataValue(f"plex-etl reconcile --source {spec.source} "
                                           f"--table {spec.name} --repair"),
        },
    )
