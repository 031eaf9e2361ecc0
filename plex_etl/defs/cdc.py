"""Change capture in Dagster: what the UI shows of the capture worker (plex_etl/cdc/worker.py).

The worker runs outside Dagster (`plex-etl capture --source NAME`; in production one Kubernetes
Deployment per source, deploy/k8s/capture-worker.yaml): no Dagster run per step. It writes to
the Dagster instance through its public API, `DagsterInstance.report_runless_asset_event`
(`DagsterReporter`), rather than the webserver's REST endpoints: the reports land in the
storage the daemon's freshness evaluation and the alert sensor read, whether or not the
webserver is up (it is a UI that can be restarted or rolled out any time), locally and in tests
with no webserver at all; the worker only needs the instance's configuration, as the code
server has it. Per captured table and report (see the worker for when):

- a **materialization** without a run, of the partitions whose rows changed (the current
  partition when none did; every partition after a first copy, which landed the whole table),
  with metadata: `lag_seconds` (plotted over time: the largest delay in the report from a
  change's commit in MySQL to its commit in the warehouse), `inserts`/`updates`/`deletes`
  (row changes read), `rows_merged`, `keys_deleted`, `position` (binary-log file:offset),
  `first_copy_rows`, `worker`. The table's freshness policy (`CAPTURE_FRESHNESS`) sees it.
- the **check** `binlog_capture`: fails (severity ERROR) when the table's capture stopped
  (schema change) or the worker fails (the message says how to recover), warns when the lag
  exceeds the worker's `lag_warn_seconds`. Executed by hand it reads the stored state from the
  warehouse. A stopped table is no longer materialized: its freshness fails after an hour, and
  the alert sensor posts that.

Captured tables keep their asset, their checks and the daily reconciliation, but leave the
polling automation (built so by plex_etl/defs/assets.py) and say what they are in their description.
"""

import datetime as dt
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping, Sequence

import dagster as dg

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.cdc.report import TableReport, WorkerSettings
from plex_etl.defs.alerts import post_alert
from plex_etl.defs.automation import RECONCILE_CRON
from plex_etl.defs.keys import table_key
from plex_etl.defs.resources import WarehouseResource
from plex_etl.sources import Source

log = logging.getLogger("plex_etl.capture")

CAPTURE_CHECK = "binlog_capture"
CAPTURE_TAG = "plex_etl/capture"
# The worker reports every table at least every `idle_report_seconds` (10 min): a table without
# a report for longer means the worker is down or stuck.
CAPTURE_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=1),
                                                   warn_window=dt.timedelta(minutes=30))


def describe_captured(source: Source, table: str) -> str:
    """What a captured table is, in plain sentences (the asset list shows a description raw, the
    lineage graph its first line); how it is kept current, entry by entry, is in `capture_schedule`."""
    return (
        f"MySQL table {source.name}.{table}, captured from the binary log (capture: binlog): inserts, "
        "updates and deletes land seconds after they commit.\n\n"
        f"Kept current by the capture worker (plex-etl capture --source {source.name}), not by a tier; "
        "the capture's reports, check and freshness are in the metadata."
    )


def capture_schedule(source: Source, table: str) -> dict[str, str]:
    """How a captured table is kept current, entry by entry (the asset's metadata, replacing the
    tier's `tier_schedule`)."""
    settings = WorkerSettings()
    return {
        "kept_current_by": f"the capture worker `plex-etl capture --source {source.name}` (no Dagster run), "
                           "seconds after each commit in MySQL",
        "reports": f"a materialization (without a run) at most every {settings.report_seconds:.0f} s while rows "
                   f"change, every {settings.idle_report_seconds / 60:.0f} min otherwise: lag_seconds (commit in "
                   "MySQL to commit in the warehouse), row changes, binary-log position",
        "check": f"{CAPTURE_CHECK}: fails when the table's capture stopped (the message says how to recover), "
                 f"warns when the lag exceeds {settings.lag_warn_seconds / 60:.0f} min",
        "freshness": "warning after 30 min without a report, failure after 1h (the worker is down)",
        "reconciliation": f"daily ({RECONCILE_CRON}): the whole table against MySQL",
        "tier_automation": "none: a reload could land an older row than the capture's; resync with "
                           f"`plex-etl capture --source {source.name} --resync {table}`",
    }


def capture_checks(source: Source, catalog: Catalog, plan: SourcePlan) -> dg.AssetChecksDefinition | None:
    """The `binlog_capture` check of each captured table (the worker reports it; by hand it reads
    the table's stored capture state)."""
    keys = {table_key(source.name, catalog, t): t for t in plan.captured}
    if not keys:
        return None
    specs = [dg.AssetCheckSpec(CAPTURE_CHECK, asset=key, description=(
        "Change capture of the table: fails when it stopped or the worker fails, warns when the lag is high "
        "(reported by the capture worker); by hand: the state stored in the warehouse")) for key in keys]

    @dg.multi_asset_check(specs=specs, name=f"{source.name}_binlog_capture", can_subset=True)
    def _capture_state(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        from plex_etl.cdc.apply import RESYNC_REQUESTED
        from plex_etl.cdc.reader import TableState

        stored = warehouse.get().cdc_positions(warehouse.dataset, source.name)
        for check in context.selected_asset_check_keys:
            table = keys[check.asset_key]
            text = stored.get(table)
            state = TableState.parse(text) if text and text != RESYNC_REQUESTED else None
            problem = ("no stored position: the worker has not copied it yet" if text is None
                       else "a resync is requested: the worker copies it again" if state is None
                       else state.stopped)
            yield dg.AssetCheckResult(
                asset_key=check.asset_key, check_name=CAPTURE_CHECK, passed=problem is None,
                severity=dg.AssetCheckSeverity.ERROR if state and state.stopped else dg.AssetCheckSeverity.WARN,
                description=problem or f"captured, at binary-log position {state.position}",
                metadata={"position": str(state.position) if state else "none"},
            )

    return _capture_state


def partition_keys(days: set[dt.date], keys: Sequence[str]) -> list[str]:
    """The partitions (daily keys, ISO days) that rows of `days` belong to: a day before the first
    partition belongs to the first (it holds the older history), a later one to the last (the
    current day); no day: the current partition."""
    if not keys:
        return []
    first, last = keys[0], keys[-1]
    known = set(keys)
    return sorted({k for k in (min(max(day.isoformat(), first), last) for day in days) if k in known} or {last})


Event = dg.AssetMaterialization | dg.AssetCheckEvaluation


class DagsterReporter:
    """Hands the worker's reports to the Dagster instance from a thread of its own: a slow or
    unreachable instance storage never holds the capture back (reports wait in a bounded queue;
    the oldest are dropped, with a warning, when it is full; a failed write is logged and
    dropped: the next report carries the current position). The first report of a table also
    marks the partitions Dagster does not know as materialized (after a first copy the whole
    table landed), after the reports waiting: one event per partition, the slow part on
    SQLite, left to the next start when the worker stops first."""

    QUEUE = 1000
    BACKLOG_SLICE = 50  # partition events written between two looks at the queue

    def __init__(self, instance: dg.DagsterInstance, source: Source, catalog: Catalog, plan: SourcePlan,
                 partitions: Mapping[str, dg.PartitionsDefinition | None], lag_warn_seconds: float) -> None:
        self.instance = instance
        self.keys = {t: table_key(source.name, catalog, t) for t in plan.captured}
        self.partitions = dict(partitions)
        self.lag_warn_seconds = lag_warn_seconds
        self.worker = f"{socket.gethostname()} pid {os.getpid()}"
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self._backlog: list[Event] = []
        self._deadline = float("inf")  # set by close: nothing is written after it
        self._completed: set[str] = set()  # tables whose partitions unknown to Dagster are marked
        self._alerted: set[str] = set()  # tables whose stop was posted to the alert webhook
        self._keys_of_day: dict[str, tuple[str, list[str]]] = {}  # table -> (the day computed, its keys)
        self._thread = threading.Thread(target=self._run, name="plex-etl-dagster-reports", daemon=True)
        self._thread.start()

    def report(self, reports: Sequence[TableReport]) -> None:
        for report in reports:
            while True:
                try:
                    self._queue.put_nowait(report)
                    break
                except queue.Full:
                    dropped = self._queue.get_nowait()
                    log.warning("Dagster reports are behind; dropped the report of %s", dropped.table)

    def close(self, timeout: float) -> None:
        """Write what is queued, for at most `timeout` seconds (the rest is dropped), then stop."""
        self._deadline = time.monotonic() + timeout
        self._queue.put(None)
        self._thread.join(timeout + 5.0)

    def _write(self, events: Sequence[Event], what: str) -> None:
        try:
            for n, event in enumerate(events):
                if time.monotonic() > self._deadline:
                    log.warning("closing: %d Dagster events of %s not written", len(events) - n, what)
                    return
                self.instance.report_runless_asset_event(event)
        except Exception as exc:  # the instance's storage unreachable: the capture goes on
            log.warning("could not report %s to Dagster: %s", what, exc)

    def _run(self) -> None:
        while True:
            try:
                report = self._queue.get(timeout=0.1 if self._backlog else None)
            except queue.Empty:
                slice_, self._backlog = self._backlog[:self.BACKLOG_SLICE], self._backlog[self.BACKLOG_SLICE:]
                self._write(slice_, "the partitions of a first copy")
                continue
            if report is None:
                if self._backlog:
                    log.info("%d partition events not written: the next start writes them", len(self._backlog))
                return
            try:
                events, backlog = self.events(report)
            except Exception as exc:
                log.warning("could not report %s to Dagster: %s", report.table, exc)
                continue
            self._write(events, report.table)
            self._backlog += backlog

    def _current_keys(self, table: str) -> list[str]:
        partitions_def = self.partitions.get(table)
        if partitions_def is None:
            return []
        today = dt.date.today().isoformat()
        cached = self._keys_of_day.get(table)
        if cached is None or cached[0] != today:  # the keys move with the days
            cached = self._keys_of_day[table] = (today, list(partitions_def.get_partition_keys()))
        return cached[1]

    def events(self, report: TableReport) -> tuple[list[Event], list[Event]]:
        """The events of one report: those to write now (the materializations of the partitions
        its rows changed, with the report's figures, and the check), and those that may wait
        (after a first copy, the partitions Dagster has not seen materialized)."""
        key = self.keys[report.table]
        if report.stopped is not None:
            if report.table not in self._alerted:  # once per stop and worker process
                try:
                    post_alert(f"plex_etl: change capture of {key.to_user_string()} stopped ({self.worker}): "
                               f"{report.stopped}", log)
                    self._alerted.add(report.table)
                except Exception as exc:  # the webhook down: the next report of the stop tries again
                    log.warning("could not post the alert for %s: %s", report.table, exc)
            return [dg.AssetCheckEvaluation(
                asset_key=key, check_name=CAPTURE_CHECK, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                description=report.stopped[:4000],
                metadata={"position": report.position or "none", "worker": self.worker},
            )], []
        lag = round(report.lag_seconds or 0.0, 3)
        changes = report.changes
        metadata = {
            "lag_seconds": dg.FloatMetadataValue(lag),
            "inserts": dg.IntMetadataValue(changes.get("inserts", 0)),
            "updates": dg.IntMetadataValue(changes.get("updates", 0)),
            "deletes": dg.IntMetadataValue(changes.get("deletes", 0)),
            "rows_merged": dg.IntMetadataValue(report.rows_merged),
            "keys_deleted": dg.IntMetadataValue(report.keys_deleted),
            "batches": dg.IntMetadataValue(report.batches),
            "position": dg.TextMetadataValue(report.position or "none"),
            "caught_up": dg.BoolMetadataValue(report.caught_up),
            "worker": dg.TextMetadataValue(self.worker),
        }
        if report.first_copy_rows is not None:
            metadata["first_copy_rows"] = dg.IntMetadataValue(report.first_copy_rows)
        total = sum(changes.values())
        description = f"first copy: {report.first_copy_rows:,} rows; " if report.first_copy_rows is not None else ""
        description += (f"change capture: {total:,} row changes in {report.batches} batches, largest lag {lag:.1f} s"
                        if total else "change capture: no change since the last report (current)")
        keys = self._current_keys(report.table)
        partitions: list[str | None] = list(partition_keys(report.days, keys)) if keys else [None]
        now: list[Event] = [
            dg.AssetMaterialization(asset_key=key, partition=p, description=description, metadata=metadata)
            for p in partitions
        ]
        late = lag > self.lag_warn_seconds
        now.append(dg.AssetCheckEvaluation(
            asset_key=key, check_name=CAPTURE_CHECK, passed=not late, severity=dg.AssetCheckSeverity.WARN,
            description=(f"lag {lag:.0f} s, above {self.lag_warn_seconds:.0f} s" if late
                         else f"captured, at binary-log position {report.position}"),
            metadata={"lag_seconds": dg.FloatMetadataValue(lag), "position": report.position or "none"},
        ))
        later: list[Event] = []
        partitions_def = self.partitions.get(report.table)
        if report.table not in self._completed and partitions_def is not None:
            # The table is captured: every partition of it is current in the warehouse. Those that
            # Dagster has not seen materialized (a first copy, a table never polled) are marked
            # once per process, after the reports waiting.
            self._completed.add(report.table)
            status = self.instance.get_status_by_partition(key, keys, partitions_def) or {}
            current = {"position": dg.TextMetadataValue(report.position or "none")}
            later = [
                dg.AssetMaterialization(asset_key=key, partition=k, metadata=current,
                                        description="current in the warehouse by change capture")
                for k in keys if k not in partitions and status.get(k) != dg.AssetPartitionStatus.MATERIALIZED
            ]
        return now, later
