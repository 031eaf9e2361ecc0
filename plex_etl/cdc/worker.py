"""The long-lived capture worker of one source (`plex-etl capture --source NAME`).

It holds the source's capture lock for its whole life (a MySQL named lock: a second worker of
the same source and warehouse is refused), follows the binary log (`Capture.step(follow=True)`
back to back: each change lands seconds after its commit) and hands a `TableReport` per table
to a `Reporter` (the Dagster instance, see plex_etl/defs/cdc.py): at most every
`report_seconds` while its rows change, every `idle_report_seconds` while they do not, at once
for a first copy, a stop or a failure. Reports never hold the capture back.

Failures do not end the worker: it reports them, waits (5 s, doubling up to a minute) and goes
on from the states stored in the warehouse; a resync requested meanwhile
(`request_resync`, what `plex-etl capture --resync` does while a worker runs) is picked up
from them. Only losing its lock ends it. A stop (`stop` set, SIGTERM in the CLI) ends the
batch being read at its next commit, commits it and returns; a first copy under way is
abandoned instead (its load rolls back).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import pymysql

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.cdc.apply import RESYNC_REQUESTED, Capture, StepResult, Stopped
from plex_etl.cdc.reader import CaptureError, connection_settings
from plex_etl.cdc.report import Reporter, TableReport, WorkerSettings
from plex_etl.sources import Source
from plex_etl.warehouse.base import PositionConflict

log = logging.getLogger("plex_etl.capture")

LOCK_SLICE_SECONDS = 5  # a wait for the lock is made of such slices, logged one by one


class WorkerRunning(CaptureError):
    """Another capture worker of the source (and warehouse) holds the lock."""


class LockLost(CaptureError):
    """The worker no longer holds its lock (its MySQL connection dropped): it must stop, since
    another worker may have started."""


def lock_name(source: Source, warehouse: str) -> str:
    """The MySQL named lock of `source`'s worker writing to `warehouse` (kind, place and dataset):
    one worker per pair; the same source may be captured into two warehouses (test and
    production) at once. At most 64 characters (MySQL's limit)."""
    digest = hashlib.sha1(f"{source.database}\n{warehouse}".encode()).hexdigest()[:12]
    return f"plex_etl_capture:{source.name[:30]}:{digest}"


class CaptureLock:
    """A MySQL named lock (`GET_LOCK`) held by one connection for the worker's life. The server
    releases it when the connection ends, also when the process is killed or its host is gone
    (then after the server notices: TCP keepalive / wait_timeout)."""

    def __init__(self, source: Source, name: str) -> None:
        self.source, self.name = source, name
        self._connection: Any = None

    def acquire(self, wait_seconds: float = 0.0) -> None:
        """Take the lock, waiting up to `wait_seconds` (logged every LOCK_SLICE_SECONDS);
        WorkerRunning names the holder when it stays taken."""
        settings = connection_settings(self.source)
        settings["read_timeout"] = max(float(settings.get("read_timeout") or 0), LOCK_SLICE_SECONDS + 30.0)
        try:
            self._connection = pymysql.connect(**settings, autocommit=True)
        except pymysql.MySQLError as exc:
            raise CaptureError(f"cannot connect to {self.source.describe()} for the capture lock: {exc}") from exc
        deadline = time.monotonic() + wait_seconds
        with self._connection.cursor() as cursor:
            while True:
                left = max(0.0, deadline - time.monotonic())
                cursor.execute("SELECT GET_LOCK(%s, %s)", (self.name, min(LOCK_SLICE_SECONDS, int(left))))
                if cursor.fetchone()[0] == 1:
                    return
                holder = self._holder(cursor)
                if time.monotonic() >= deadline:
                    self.release()
                    raise WorkerRunning(
                        f"another capture worker of {self.source.name} is running ({holder} holds the MySQL lock "
                        f"{self.name!r} on {self.source.describe()}): one worker per source and warehouse. Stop it "
                        "first, or ask it to copy tables again with `plex-etl capture --source "
                        f"{self.source.name} --resync TABLE` (it picks the request up by itself)"
                    )
                log.info("waiting for the capture lock %r of %s, held by %s (%.0f s left)", self.name,
                         self.source.name, holder, deadline - time.monotonic())

    def _holder(self, cursor: Any) -> str:
        cursor.execute("SELECT IS_USED_LOCK(%s)", (self.name,))
        (connection_id,) = cursor.fetchone()
        if connection_id is None:
            return "nobody any more"
        cursor.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,))
        row = cursor.fetchone()
        return f"MySQL connection {connection_id}" + (f" from {row[0]}" if row else "")

    def verify(self) -> None:
        """Raise LockLost unless this connection still holds the lock (one round trip)."""
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
                held = cursor.fetchone()[0] == 1
        except pymysql.MySQLError as exc:
            raise LockLost(f"{self.source.name}: the capture lock's connection failed ({exc}); stopping, "
                           "since another worker may have taken over") from exc
        if not held:
            raise LockLost(f"{self.source.name}: the capture lock {self.name!r} is no longer held; stopping")

    def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(pymysql.MySQLError):
                connection.close()  # the server releases the lock with the connection


def request_resync(capture: Capture, tables: Iterable[str]) -> list[str]:
    """Ask the running worker to copy `tables` again: their stored state becomes
    RESYNC_REQUESTED (the worker's next commit on them conflicts and it reads the states again;
    it also reads them every `state_seconds` while idle). Returns the tables requested."""
    store = capture.store
    stored = store.cdc_positions(capture.dataset, capture.source.name)
    wanted = sorted(set(tables))
    store.apply_changes(capture.dataset, capture.source.name, [], dict.fromkeys(wanted, RESYNC_REQUESTED),
                        {t: stored.get(t) for t in wanted})
    return wanted


class Worker:
    """Follows the binary log of `source` until `stop` is set (see the module docstring)."""

    def __init__(
        self, source: Source, catalog: Catalog, plan: SourcePlan, warehouse: Any, dataset: str,
        *, reporter: Reporter | None = None, lock: CaptureLock | None = None,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.source, self.plan = source, plan
        self.reporter = reporter
        self.lock = lock
        self.settings = settings or WorkerSettings()
        self.capture = Capture(source, catalog, plan, warehouse, dataset, hook=self._hook)
        self.pending = {t: TableReport(t, reported_at=time.monotonic()) for t in plan.captured}
        self.sent_stopped: dict[str, str | None] = {}  # table -> the stop or failure last reported
        self.failure: str | None = None
        self.caught_up = False
        self.applied = 0  # row changes applied since start
        self.behind: tuple[float, int] | None = None  # catching up since (monotonic), row changes applied since
        self.ready = False  # caught up once since the start

    def _hook(self, stage: str) -> None:
        if stage == "read" and self.lock is not None:
            self.lock.verify()  # no commit without the lock

    def run(self, stop: threading.Event, resync: Iterable[str] = ()) -> None:
        settings = self.settings
        resync = set(self.plan.captured if "all" in set(resync) else resync)
        delay = settings.retry_seconds[0]
        states_read = time.monotonic()
        self.behind = (states_read, 0)  # a start catches up with what was written meanwhile
        log.info("capture of %s: %s", self.source.name, ", ".join(self.plan.captured) or "no captured table")
        try:
            while not stop.is_set():
                since = time.monotonic() - states_read
                if (since >= settings.state_seconds and self._idle()) or since >= settings.state_seconds * 10:
                    if self.lock is not None:
                        self.lock.verify()
                    self.capture.reload()  # resync requests, states changed by hand
                    states_read = time.monotonic()
                started = time.monotonic()
                try:
                    result = self.capture.step(
                        max_events=settings.max_events, max_seconds=settings.max_seconds, resync=resync,
                        follow=True, linger=settings.linger, stop=stop, position_seconds=settings.position_seconds,
                    )
                except PositionConflict as exc:
                    log.warning("%s; reading the stored states again", exc)
                    self.capture.reload()
                    states_read = time.monotonic()
                    continue
                except Stopped as exc:
                    log.info("%s", exc)
                    break
                except LockLost:
                    raise
                except Exception as exc:  # MySQL or the warehouse unreachable, a purged log...: go on after a pause
                    if not isinstance(exc, CaptureError):
                        log.exception("capture of %s failed", self.source.name)
                    delay = self._failed(str(exc) if isinstance(exc, CaptureError) else f"{type(exc).__name__}: {exc}",
                                         delay, stop)
                    states_read = time.monotonic()
                    continue
                resync = set()
                delay = settings.retry_seconds[0]
                recovered = self.failure is not None
                self.failure = None
                self._account(result, started)
                self._report(force=recovered)
        finally:
            self.capture.close()
            self._report(final=True)
            log.info("capture of %s stopped (%s row changes applied)", self.source.name, f"{self.applied:,}")

    def _idle(self) -> bool:
        return self.caught_up and not any(r.batches for r in self.pending.values())

    def _failed(self, message: str, delay: float, stop: threading.Event) -> float:
        """Report a failure once (per distinct message), wait, read the states again."""
        self.capture.reload()
        if message != self.failure:
            log.error("capture of %s failed, retrying in %.0f s: %s", self.source.name, delay, message)
            self.failure = message
            for report in self.pending.values():
                report.stopped = message
            self._report()
        else:
            log.warning("capture of %s still failing, retrying in %.0f s", self.source.name, delay)
        stop.wait(delay)
        return min(delay * 2, self.settings.retry_seconds[1])

    def _account(self, result: StepResult, started: float) -> None:
        applied = sum(result.totals().values())
        if result.snapshots:  # a catch-up is timed from the end of the first copies
            self.behind = (started + result.seconds.get("copy", 0.0), 0)
        if self.behind is None and not result.caught_up:
            self.behind = (started, 0)
        if self.behind is not None:
            since, changes = self.behind[0], self.behind[1] + applied
            self.behind = (since, changes)
            if result.caught_up and (changes or not self.ready):
                self.ready = True  # the first such line says the worker follows the log
                seconds = time.monotonic() - since
                log.info("%s caught up at %s: %s row changes in %.1f s (%s row changes/s)", self.source.name,
                         result.end, f"{changes:,}", seconds, f"{changes / seconds:,.0f}" if seconds else "-")
            if result.caught_up:
                self.behind = None
        self.caught_up = result.caught_up
        for table, rows in result.snapshots.items():
            report = self.pending[table]
            report.first_copy_rows = (report.first_copy_rows or 0) + rows
            report.batches += 1
            log.info("%s.%s: first copy, %s rows", self.source.name, table, f"{rows:,}")
        self.applied += applied
        for table in self.capture.specs:
            report = self.pending[table]
            state = (self.capture.states or {}).get(table)
            if state is not None:
                report.position = str(state.position)
            report.caught_up = result.caught_up
            report.stopped = state.stopped if state else None
            if report.stopped is not None:
                continue
            if table not in result.changes and table not in result.rows_merged:
                continue
            report.batches += 1
            report.changes.update(result.changes.get(table, {}))
            report.rows_merged += result.rows_merged.get(table, 0)
            report.keys_deleted += result.keys_deleted.get(table, 0)
            report.days |= result.days.get(table, set())
            report.lag_seconds = max(report.lag_seconds or 0.0, result.lag_seconds)
        if applied:
            log.debug("%s: %s row changes up to %s, lag %.1f s (%s)", self.source.name, applied, result.end,
                      result.lag_seconds, ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items()))

    def _due(self, report: TableReport, now: float, force: bool, final: bool) -> bool:
        settings = self.settings
        if report.position is None and report.stopped is None:
            return False  # nothing to say yet (never copied)
        if report.stopped != self.sent_stopped.get(report.table):
            return True  # a table stopped, a failure, or the end of either: at once
        if report.stopped is not None:
            return False  # said already
        age = now - report.reported_at
        return (force or report.first_copy_rows is not None or age >= settings.idle_report_seconds
                or (report.changed and (final or age >= settings.report_seconds)))

    def _report(self, force: bool = False, final: bool = False) -> None:
        """Hand the due reports to the reporter (see the module docstring)."""
        now = time.monotonic()
        due = []
        for table, report in list(self.pending.items()):
            if not self._due(report, now, force, final):
                continue
            report.reported_at = now
            due.append(report)
            self.sent_stopped[table] = report.stopped
            self.pending[table] = TableReport(table, position=report.position, stopped=report.stopped,
                                              caught_up=report.caught_up, reported_at=now)
        if due and self.reporter is not None:
            self.reporter.report(due)
