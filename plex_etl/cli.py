"""`plex-etl`: the project's command line (demo databases, discovery)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def _cmd_demo_db(args: argparse.Namespace) -> int:
    from plex_etl.demo.builder import DEMO_SOURCES, build_demo
    from plex_etl.sources import get_source

    names = DEMO_SOURCES if args.source == "all" else (args.source,)
    days = args.years * 365 + args.years // 4 if args.years else args.days
    for name in names:
        build_demo(get_source(name), scale=args.scale, days=days, seed=args.seed, force=args.force)
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    from pathlib import Path

    from plex_etl.catalog.store import run_discover
    from plex_etl.sources import get_source

    source = get_source(args.source)
    run_discover(
        source,
        include=args.include or (),
        exclude=args.exclude or (),
        docs_directory=Path(args.docs),
        access=lambda connection, catalog, plan: _access_section(source, connection, catalog, plan),
    )
    return 0


def _access_section(
    source: Any, connection: Any, catalog: Any, plan: Any, day: Any = None, tables: Sequence[str] = ()
) -> str:
    """The "Access paths" Markdown of a source: EXPLAIN of each table's one-day read (yesterday)."""
    from plex_etl.catalog.plan import validate
    from plex_etl.extract.access import access_markdown, access_reports

    validate(plan, catalog)
    day = day or _window(source, 2)[0]
    return access_markdown(access_reports(connection, catalog, plan, day, tables), day)


def _cmd_explain(args: argparse.Namespace) -> int:
    """Print how MySQL reads each replicated table's one-day partition: index, key range or full
    scan, rows examined per day, and the CREATE INDEX a DBA could apply for each full scan."""
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.mysql import connect
    from plex_etl.sources import get_source

    source = get_source(args.source)
    catalog, plan = load_source_catalog(source.name)
    day = dt.date.fromisoformat(args.day) if args.day else None
    with connect(source) as connection:
        print(_access_section(source, connection, catalog, plan, day, args.table or ()), end="")
    return 0


def _sources_with_catalogs() -> list:
    from plex_etl.catalog.store import catalog_path
    from plex_etl.sources import load_sources

    return [s for s in load_sources().values() if catalog_path(s.name).exists()]


def _window(source, days: int) -> tuple:
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    return today - dt.timedelta(days=days - 1), today


def _dagster_base(multiprocess: bool, config: dict | None = None) -> list[str]:
    """`dagster asset materialize` of the code location, in one process unless asked otherwise;
    `config`: more run config (e.g. a table's `days`)."""
    import json
    import shutil
    from pathlib import Path

    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    # The console shows INFO and above: a range run's DEBUG lines (one per day and table for
    # its planned and materialized events) are formatted for a console nobody reads here, and
    # the event log keeps every event anyway.
    config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(config or {})}
    if not multiprocess:
        # One process for the whole run: on small data, starting a process per step costs more
        # than the step itself. Scheduled runs keep Dagster's multiprocess executor.
        config["execution"] = {"config": {"in_process": {}}}
    return [dagster, "asset", "materialize", "-m", "plex_etl.definitions", "--config-json", json.dumps(config)]


def _key_selection(source: str, catalog, tables: list[str]) -> str:
    """An explicit selection of the tables' assets (never empty: that would select every asset)."""
    from plex_etl.defs.keys import table_key

    if not tables:
        raise ValueError("an empty selection would run every asset")
    return " or ".join(f'key:"{table_key(source, catalog, t).to_user_string()}"' for t in tables)


STOP_GRACE_SECONDS = 30.0  # after a forwarded SIGTERM, how long the Dagster child may take to stop


def _materialize(base: list[str], arguments: list[str]) -> int:
    """Run one `dagster asset materialize` (printed first); its output only when it fails.

    SIGTERM or SIGINT to plex-etl is forwarded to the child as SIGTERM (Dagster interrupts the
    running step: the read stops and frees its MySQL connection), the child is waited for
    (killed after STOP_GRACE_SECONDS, or at once while it only waits for a pool slot, which
    Dagster's in-process executor keeps waiting through SIGTERM) and plex-etl exits with
    128 + the signal number (plex_etl/supervise.py).
    """
    import os

    from plex_etl.supervise import run_stoppable

    _release_dead_runs()
    print("$ " + " ".join(f"'{c}'" if " " in c else c for c in [*base[1:], *arguments]), flush=True)
    # A bulk load plans each table's range with one event, not one per day (Dagster's own switch,
    # which its storages honour): a two-month window of 23 tables is ~800 planned-event writes
    # fewer. Its price: while this run goes, or if it fails, its days show their previous status,
    # which is the truth (a load is atomic: a failed one leaves every day as it was); the run
    # shows as failed, with its error printed here. Runs that the UI, the sensors and backfills
    # launch keep Dagster's per-day planned events.
    env = {**os.environ}
    env.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
    run = run_stoppable([*base, *arguments], grace_seconds=STOP_GRACE_SECONDS, name="the Dagster run", env=env,
                        capture=True, idle=lambda pid: not _running_a_step(pid))
    if run.stopped_by is not None:
        _release_dead_runs()  # the run of a killed child, with its waiting steps
        print(f"plex-etl: stopped by signal {run.stopped_by} (the run's exit code: {run.returncode})",
              file=sys.stderr, flush=True)
        return 128 + run.stopped_by
    if run.returncode != 0:
        print(run.output[-10000:], file=sys.stderr)
        return run.returncode
    print("  run succeeded", flush=True)
    return 0


def _instance() -> Any:
    """The Dagster instance of $DAGSTER_HOME, or None without one (the CLI then uses a temporary one)."""
    import os

    import dagster as dg

    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None


def _release_dead_runs() -> None:
    """Fail the runs whose process was killed and free their pool slots (defs/dead_runs.py)."""
    from plex_etl.defs.dead_runs import release_dead_runs

    instance = _instance()
    if instance is not None:
        with instance:
            for line in release_dead_runs(instance):
                print(f"plex-etl: {line}", file=sys.stderr, flush=True)


def _running_a_step(pid: int) -> bool:
    from plex_etl.defs.dead_runs import running_a_step

    instance = _instance()
    if instance is None:
        return True  # cannot tell: the grace applies
    with instance:
        return running_a_step(instance, pid)


def _cmd_replicate(args: argparse.Namespace) -> int:
    """Materialize the last N days (or all days) and today's snapshots through the Dagster CLI.

    Each source loads in two runs: its snapshot tables (unpartitioned: the whole table, as
    today's snapshot), then the dated tables over the range (a single-run backfill), so that
    every parent has landed before its children's orphan checks run. The commands are
    printed so they can be run, or adapted, by hand.
    """
    from plex_etl.catalog.plan import pending_review_message
    from plex_etl.catalog.store import load_source_catalog, plan_path

    base = _dagster_base(args.multiprocess)
    runs = []
    pending = []
    for source in _sources_with_catalogs():
        if args.source and source.name != args.source:
            continue
        catalog, plan = load_source_catalog(source.name)
        if message := pending_review_message(plan, plan_path(source.name)):
            pending.append(message)
        start, today = _window(source, args.days)
        # The first partition also loads the whole history: --full starts there, and so does a
        # window of days that reaches back to it.
        start = plan.first_partition(today) if args.full else max(start, plan.first_partition(today))
        # Snapshots first, so that the dated tables' orphan checks find their parents.
        snapshots = [p.table for p in plan.included if p.strategy == "snapshot"]
        dated = [p.table for p in plan.included if p.strategy != "snapshot"]
        if snapshots:
            runs.append(["--select", _key_selection(source.name, catalog, snapshots)])
        if dated:
            runs.append(["--select", _key_selection(source.name, catalog, dated),
                         "--partition-range", f"{start}...{today}"])
    for message in pending:
        print(message, file=sys.stderr)
    if not runs:
        print("nothing to replicate: no source with a catalog and an included (reviewed) table"
              + (f" named {args.source}" if args.source else "")
              + ("" if pending else "; run `plex-etl discover --source NAME` first"), file=sys.stderr)
        return 1
    if not args.source:
        runs.append(["--select", "group:views"])
    for arguments in runs:
        code = _materialize(base, arguments)
        if code:
            return code
    return 0


class CommandError(RuntimeError):
    """A command cannot do what it was asked; the message says why and what to do."""


def _comparison_tables(source: str | None, tables: Sequence[str] | None = None) -> list[tuple]:
    """(source, catalog, plan, tables) of every source to compare: those with a catalog and an
    included, reviewed table (only `source` if given; only `tables` if given). Nothing to compare
    is an error naming why (no such source, no catalog, tables awaiting review, no such table):
    an empty comparison must never read as "equal". Sources skipped for one of these reasons while
    others are compared are named on stderr."""
    from plex_etl.catalog.store import catalog_path, load_source_catalog, plan_path
    from plex_etl.sources import get_source, load_sources

    selected = [get_source(source)] if source else list(load_sources().values())  # an unknown one: named
    reasons: list[str] = []
    chosen: list[tuple] = []
    for s in selected:
        if not catalog_path(s.name).exists():
            reasons.append(f"{s.name} has no catalog yet (run `plex-etl discover --source {s.name}`, review "
                           f"{plan_path(s.name)})")
            continue
        catalog, plan = load_source_catalog(s.name)
        included = sorted(p.table for p in plan.included)
        named = [t for t in included if not tables or t in tables]
        if named:
            chosen.append((s, catalog, plan, named))
            continue
        pending = plan.pending_review
        if tables:
            reasons.append(f"{s.name} has no included table named {', '.join(tables)}"
                           + (f" ({', '.join(t for t in tables if t in pending)} await review)"
                              if set(tables) & set(pending) else ""))
        elif pending:
            reasons.append(f"{s.name}: its {len(pending)} table(s) await review ({_listed(pending)}); accept one "
                           f"by deleting its `proposed: true` line in {plan_path(s.name)}")
        else:
            reasons.append(f"{s.name}: no table is included in {plan_path(s.name)}")
    if not chosen:
        raise CommandError("nothing to compare: " + "; ".join(reasons or ["no source in sources.yaml"]))
    for reason in reasons:
        print(f"skipped: {reason}", file=sys.stderr)
    missing = sorted(set(tables or ()) - {t for *_, named in chosen for t in named})
    if missing:
        raise CommandError(f"no included table named {', '.join(missing)} in "
                           f"{', '.join(s.name for s, *_ in chosen)}")
    return chosen


def _listed(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _cmd_compare(args: argparse.Namespace) -> int:
    """Print MySQL vs warehouse row counts per table for the last N days."""
    from plex_etl.compare import count_tables, format_counts
    from plex_etl.defs.resources import warehouse_from_environment

    resource = warehouse_from_environment()
    warehouse = resource.get()
    counts = []
    for source, catalog, plan, _ in _comparison_tables(args.source):
        start, today = _window(source, args.days)
        counts += count_tables(source, catalog, plan, warehouse, resource.dataset, start, today)
    print(format_counts(counts))
    return 0 if all(c.equal for c in counts) else 1


def _cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare whole tables, day by day, in MySQL and in the warehouse (counts, keys and every
    value); --repair reloads the partitions that differ (through the Dagster CLI, like
    replicate, without key bounds), then compares again."""
    import os

    from plex_etl.defs.keys import table_key
    from plex_etl.defs.resources import warehouse_from_environment
    from plex_etl.extract.spec import live_replicated_table
    from plex_etl.mysql import connect
    from plex_etl.reconcile import error_text, reconcile_table, value_coverage

    resource = warehouse_from_environment()
    warehouse = resource.get()
    differing = 0
    for source, catalog, plan, tables in _comparison_tables(args.source, args.table):
        today = _window(source, 1)[1]
        with connect(source) as connection:
            for table in tables:
                try:
                    spec = live_replicated_table(connection, catalog, plan, table, resource.dataset)
                    coverage = value_coverage(plan, spec, today)
                    result = reconcile_table(connection, warehouse, spec, today, coverage)
                except Exception as exc:  # one table's failure (renamed in MySQL, ...) does not stop the others
                    connection.rollback()
                    print(f"{source.name}.{table}: cannot compare: {error_text(exc)}", flush=True)
                    differing += 1
                    continue
                print(result.describe(), flush=True)
                if result.equal:
                    continue
                if not args.repair:
                    differing += 1
                    continue
                # Without key bounds: a row entered far out of key order (which a key-bounded
                # read can leave out, see extract/access.py) is read by the repair.
                os.environ["PLEX_ETL_KEY_BOUNDS"] = "off"
                for days in repair_runs(result.partitions_to_reload(today), plan.first_partition(today)):
                    code = _materialize(_dagster_base(multiprocess=False, config=days.run_config(
                        table_key(source.name, catalog, table))), [
                        "--select", _key_selection(source.name, catalog, [table]),
                        *([] if spec.plan.strategy == "snapshot" else days.partition_arguments()),
                    ])
                    if code:
                        return code
                again = reconcile_table(connection, warehouse, spec, today, coverage)
                print("  after repair: " + again.describe(), flush=True)
                differing += 0 if again.equal else 1
    if differing:
        print(f"{differing} table(s) differ between MySQL and the warehouse (or could not be compared)",
              file=sys.stderr)
    return 1 if differing else 0


@dataclass(frozen=True)
class RepairRun:
    """One `dagster asset materialize` of a repair: partitions [first, last], or, inside the first
    partition (the history), only the days [first, last] of it (run config `days`)."""

    first: dt.date
    last: dt.date
    history_partition: dt.date | None = None  # the first partition, when the days are history

    def partition_arguments(self) -> list[str]:
        if self.history_partition is not None:
            return ["--partition", self.history_partition.isoformat()]
        if self.first == self.last:
            return ["--partition", self.first.isoformat()]
        return ["--partition-range", f"{self.first}...{self.last}"]

    def run_config(self, key: Any) -> dict:
        if self.history_partition is None:
            return {}
        return {"ops": {key.to_python_identifier(): {"config": {"days": f"{self.first}...{self.last}"}}}}


HISTORY_RUNS = 10  # at most this many runs reload days of history for one table; closer days merge


def repair_runs(days: Sequence[dt.date], first_partition: dt.date) -> list[RepairRun]:
    """The runs that reload exactly `days`: consecutive window days as one partition range;
    days of history (on or before the first partition, which holds them all) as runs of the
    first partition narrowed to a day range, the nearest ranges merged so that a table never
    needs more than HISTORY_RUNS of them (a few more days read, never the whole history)."""
    history = _ranges([d for d in days if d <= first_partition])
    while len(history) > HISTORY_RUNS:
        gaps = [(history[i + 1][0] - history[i][1], i) for i in range(len(history) - 1)]
        _, i = min(gaps)
        history[i:i + 2] = [(history[i][0], history[i + 1][1])]
    return [RepairRun(a, b, first_partition) for a, b in history] + [
        RepairRun(a, b) for a, b in _ranges([d for d in days if d > first_partition])
    ]


def _ranges(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days grouped into (first, last) ranges."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if ranges and ranges[-1][1] + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _cmd_status(args: argparse.Namespace) -> int:
    """Every replicated table's health from the Dagster instance of $DAGSTER_HOME: the table the
    UI's asset plex_etl/replication_status shows (exit 1 when a table is FAIL)."""
    import os

    import dagster as dg

    from plex_etl.sources import SourceConfigError, load_sources
    from plex_etl.status import counts, text_report

    if not os.environ.get("DAGSTER_HOME"):
        raise SourceConfigError("DAGSTER_HOME is not set: point it at the Dagster instance whose loads to report "
                                "(the Makefile uses .dagster_home)")
    from plex_etl.definitions import defs
    from plex_etl.defs.status import gather, status_tables

    sources = load_sources()
    if args.source and args.source not in sources:
        raise SourceConfigError(f"no source named {args.source!r} (sources: {', '.join(sorted(sources))})")
    tables = [t for t in status_tables(defs.assets or [], defs.asset_checks or [],
                                       {s.name: s.time_zone for s in sources.values()})
              if not args.source or t.source == args.source]
    skipped = dict((defs.metadata or {}).get("plex_etl/skipped_sources", {}))
    for name, why in skipped.items():
        if not args.source or name == args.source:
            print(f"source {name} is not loaded by the code location: {why}", file=sys.stderr)
    if not tables:
        print("no replicated table" + (f" of source {args.source}" if args.source else ""), file=sys.stderr)
        return 1
    now = dt.datetime.now(dt.UTC)
    with dg.DagsterInstance.get() as instance:
        statuses = gather(instance, tables, now)
    print(text_report(statuses), end="")
    return 1 if counts(statuses)["FAIL"] else 0


DEV_STOP_SECONDS = 20.0  # `dagster dev` stops its webserver, daemon and code servers in this time, or is killed


def _cmd_dev(args: argparse.Namespace) -> int:
    """`dagster dev` on the code location (webserver, daemon, code server), stopped by SIGTERM,
    SIGINT or SIGHUP within seconds however it was started (plex_etl/supervise.py says why
    `dagster dev` alone may ignore them)."""
    import shutil
    from pathlib import Path

    from plex_etl.supervise import run_stoppable

    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "dev", "-m", "plex_etl.definitions", "--host", args.host, "--port", str(args.port)]
    run = run_stoppable(argv, grace_seconds=DEV_STOP_SECONDS, name="dagster dev")
    if run.stopped_by is not None:
        print(f"plex-etl dev: stopped (signal {run.stopped_by})", file=sys.stderr, flush=True)
        return 128 + run.stopped_by
    return run.returncode


def _cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove what killed loads left behind: local staging folders in the temp directory and,
    on BigQuery, staging tables of the dataset older than --hours."""

    from plex_etl.defs.resources import warehouse_from_environment
    from plex_etl.warehouse.local import remove_stale_staging

    age = dt.timedelta(hours=args.hours)
    removed = [str(p) for p in remove_stale_staging(max_age=age)]
    resource = warehouse_from_environment()
    if resource.resolved_kind == "bigquery":
        warehouse = resource.get()
        removed += [f"{resource.dataset}.{t}" for t in warehouse.drop_stale_staging_tables(resource.dataset, age)]
    for item in removed:
        print(f"removed {item}")
    print(f"{len(removed)} staging leftovers removed")
    return 0


def _cmd_accept(args: argparse.Namespace) -> int:
    """Accept the reviewed proposals of a source's plan (all, or --table): they load from then on."""
    from plex_etl.catalog.plan import PlanError, accept_proposals
    from plex_etl.catalog.store import load_source, plan_path
    from plex_etl.sources import get_source

    source = get_source(args.source)
    path = plan_path(source.name)
    before = path.read_text()
    accepted = accept_proposals(path, source.name, args.table)
    try:  # the accepted entries must agree with the catalog (other entries' problems are theirs)
        problems = load_source(source.name).problems
        refused = [problems[t] for t in accepted if t in problems]
        if refused:
            raise PlanError("invalid plan:\n  " + "\n  ".join(refused))
    except Exception:
        path.write_text(before)
        raise
    for table, why in sorted(problems.items()):
        print(f"warning: table {table} does not load: {why}", file=sys.stderr)
    print(f"{path}: accepted {len(accepted)} proposed entr{'y' if len(accepted) == 1 else 'ies'}"
          + (f": {', '.join(accepted)}" if accepted else " (none was proposed)"))
    return 0


def _cmd_pools(args: argparse.Namespace) -> int:
    """Apply each source's `pool_limit` to the Dagster instance of $DAGSTER_HOME, and free the
    slots of runs whose process was killed (defs/dead_runs.py)."""
    import dagster as dg

    from plex_etl.defs.dead_runs import release_dead_runs
    from plex_etl.defs.pools import apply_pool_limits
    from plex_etl.sources import load_sources

    with dg.DagsterInstance.get() as instance:
        for pool, limit in apply_pool_limits(instance, load_sources().values()).items():
            print(f"pool {pool}: {limit} concurrent extractions")
        for line in release_dead_runs(instance):
            print(line)
    return 0


CAPTURE_STOP_GRACE_SECONDS = 20.0  # after SIGTERM, how long the worker may take to commit its batch
EXIT_WORKER_RUNNING = 3


class _Abandoned(BaseException):
    """A second signal, or the stop grace over: the batch under way is abandoned (nothing of it
    is committed; the next start reads it again)."""


def _cmd_capture(args: argparse.Namespace) -> int:
    """Run the change-capture worker of one source until SIGTERM or SIGINT (plex_etl/cdc/worker.py).

    The first signal ends the batch being read at its next commit, commits it and exits 0; a
    first copy under way is abandoned (it rolls back). A second signal, or
    CAPTURE_STOP_GRACE_SECONDS without an end, abandons the batch at once (exit 128 + signal):
    nothing of it is committed, the next start reads it again. With --resync while another
    worker runs, the request is stored for that worker and the command exits 0.
    """
    import logging
    import os
    import signal
    import threading

    from plex_etl.catalog.store import load_source_catalog, plan_path
    from plex_etl.cdc.apply import Capture
    from plex_etl.cdc.worker import CaptureLock, Worker, WorkerRunning, WorkerSettings, lock_name, request_resync
    from plex_etl.defs.resources import warehouse_from_environment
    from plex_etl.sources import get_source

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("plex_etl").setLevel(args.log_level)
    source = get_source(args.source)
    catalog, plan = load_source_catalog(source.name)
    if not plan.captured:
        print(f"plex-etl capture: no table of {source.name} is captured: add `capture: binlog` to a table's "
              f"entry in {plan_path(source.name)}", file=sys.stderr)
        return 2
    resync = list(plan.captured) if "all" in (args.resync or ()) else list(args.resync or ())
    if unknown := sorted(set(resync) - set(plan.captured)):
        print(f"plex-etl capture: --resync {', '.join(unknown)}: not captured tables of {source.name} "
              f"({', '.join(plan.captured)})", file=sys.stderr)
        return 2
    resource = warehouse_from_environment()
    warehouse = resource.get()
    place = resource.project if resource.resolved_kind == "bigquery" else os.path.abspath(resource.local_path)
    lock = CaptureLock(source, lock_name(source, f"{resource.resolved_kind}:{place}:{resource.dataset}"))
    try:
        lock.acquire(args.lock_wait)
    except WorkerRunning as exc:
        if not resync:
            print(f"plex-etl capture: {exc}", file=sys.stderr)
            return EXIT_WORKER_RUNNING
        requested = request_resync(Capture(source, catalog, plan, warehouse, resource.dataset), resync)
        print(f"resync of {', '.join(requested)} requested from the running worker of {source.name}: it copies "
              "them again within a minute (its log says when)")
        return 0
    settings = WorkerSettings()
    reporter = None if args.no_report else _capture_reporter(source, catalog, plan, settings)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1 or signum == signal.SIGALRM:
            raise _Abandoned()
        logging.getLogger("plex_etl.capture").info(
            "signal %d: stopping after the batch under way (a second signal abandons it)", signum)
        stop.set()
        signal.alarm(int(CAPTURE_STOP_GRACE_SECONDS))

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    try:
        Worker(source, catalog, plan, warehouse, resource.dataset, reporter=reporter, lock=lock,
               settings=settings).run(stop, resync)
    except _Abandoned:
        print(f"plex-etl capture: stopped by signal {received[0]}: the batch under way was abandoned (nothing "
              "of it committed; read again at the next start)", file=sys.stderr)
        return 128 + received[0]
    finally:
        signal.alarm(0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if reporter is not None:
            reporter.close(timeout=3.0)
        lock.release()
    return 0


def _capture_reporter(source: Any, catalog: Any, plan: Any, settings: Any) -> Any:
    """The Dagster instance of $DAGSTER_HOME as the worker's reporter, with each captured table's
    partitions as the code location defines them."""
    import os

    import dagster as dg

    from plex_etl.defs.cdc import DagsterReporter
    from plex_etl.defs.keys import table_key

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit(
            "plex-etl capture: DAGSTER_HOME is not set: the worker reports each table's changes, lag and "
            "position to the Dagster instance the UI reads (the Makefile's is .dagster_home; in Kubernetes the "
            "chart's instance configuration). Set it, or pass --no-report."
        )
    from plex_etl.definitions import defs  # the code location, as the UI loads it

    partitions = {t: defs.resolve_assets_def(table_key(source.name, catalog, t)).partitions_def
                  for t in plan.captured}
    return DagsterReporter(dg.DagsterInstance.get(), source, catalog, plan, partitions, settings.lag_warn_seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plex-etl", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also PLEX_ETL_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-db", help="build the demo plex/quantio databases")
    demo.add_argument("--scale", type=float, default=0.001, help="fraction of production rows")
    demo.add_argument("--source", choices=["plex", "quantio", "all"], default="all")
    demo.add_argument("--days", type=int, default=60, help="event dates spread over the last N days")
    demo.add_argument("--years", type=int, help="event dates spread over the last N years (a long history; "
                      "overrides --days)")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--force", action="store_true", help="drop a database this tool did not create")
    demo.set_defaults(func=_cmd_demo_db)

    disc = commands.add_parser("discover", help="write the catalog of a source from MySQL")
    disc.add_argument("--source", required=True)
    disc.add_argument("--include", action="append", help="table name pattern (glob), repeatable")
    disc.add_argument("--exclude", action="append", help="table name pattern (glob), repeatable")
    disc.add_argument("--docs", default="docs/catalog", help="where the Markdown structure goes")
    disc.set_defaults(func=_cmd_discover)

    explain = commands.add_parser(
        "explain", help="how MySQL reads each table's one-day partition (index, key range, full scan)"
    )
    explain.add_argument("--source", required=True)
    explain.add_argument("--table", action="append", help="only this table (repeatable)")
    explain.add_argument("--day", help="the partition to explain, YYYY-MM-DD (default: yesterday)")
    explain.set_defaults(func=_cmd_explain)

    replicate = commands.add_parser("replicate", help="materialize the last N days of every source")
    replicate.add_argument("--days", type=int, default=7)
    replicate.add_argument("--source", help="only this source (default: every source with a catalog)")
    replicate.add_argument("--full", action="store_true",
                           help="every partition of the window; the first one loads the whole history")
    replicate.add_argument("--multiprocess", action="store_true", help="one process per step (Dagster's default)")
    replicate.set_defaults(func=_cmd_replicate)

    reconcile = commands.add_parser(
        "reconcile", help="whole tables, day by day: MySQL vs warehouse counts, keys and values (exit 1 if they differ)"
    )
    reconcile.add_argument("--source", help="only this source (default: every source with a catalog)")
    reconcile.add_argument("--table", action="append", help="only this table (repeatable)")
    reconcile.add_argument("--repair", action="store_true", help="reload exactly the partitions that differ")
    reconcile.set_defaults(func=_cmd_reconcile)

    compare = commands.add_parser("compare", help="MySQL vs warehouse row counts for the last N days")
    compare.add_argument("--days", type=int, default=7)
    compare.add_argument("--source", help="only this source (default: every source with a catalog)")
    compare.set_defaults(func=_cmd_compare)

    cleanup = commands.add_parser("cleanup", help="remove staging left behind by killed loads")
    cleanup.add_argument("--hours", type=float, default=6.0, help="only staging older than this")
    cleanup.set_defaults(func=_cmd_cleanup)

    accept = commands.add_parser("accept", help="accept the reviewed proposals of a plan (they then load)")
    accept.add_argument("--source", required=True)
    accept.add_argument("--table", action="append", help="only this table (repeatable; default: all proposed)")
    accept.set_defaults(func=_cmd_accept)

    status = commands.add_parser("status", help="every replicated table: state, last load, freshness, "
                                 "reconciliation, failing checks, next refresh (exit 1 if a table is FAIL)")
    status.add_argument("--source", help="only this source (default: every source)")
    status.set_defaults(func=_cmd_status)

    dev = commands.add_parser("dev", help="the Dagster UI, daemon and code server (dagster dev); "
                              "SIGTERM or SIGINT stops them all within seconds")
    dev.add_argument("--host", default="127.0.0.1", help="the webserver's address")
    dev.add_argument("--port", type=int, default=3000, help="the webserver's port")
    dev.set_defaults(func=_cmd_dev)

    pools = commands.add_parser("pools", help="set each source's Dagster pool to its sources.yaml pool_limit")
    pools.set_defaults(func=_cmd_pools)

    capture = commands.add_parser(
        "capture", help="run the change-capture worker of a source (its `capture: binlog` tables) until stopped"
    )
    capture.add_argument("--source", required=True)
    capture.add_argument("--resync", action="append", metavar="TABLE",
                         help="copy this table again first (repeatable; `all`); asks the running worker, if any")
    capture.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for another worker of the source to stop (default: refuse at once)")
    capture.add_argument("--no-report", action="store_true", help="do not report to the Dagster instance")
    capture.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING"], default="INFO")
    capture.set_defaults(func=_cmd_capture)
    return parser


def _project_errors() -> tuple[type[Exception], ...]:
    """The project's own error classes: their messages already name file, source, table."""
    from plex_etl.catalog.drift import SchemaDriftError
    from plex_etl.catalog.model import CatalogError
    from plex_etl.catalog.plan import PlanError
    from plex_etl.cdc.reader import CaptureError
    from plex_etl.extract.stream import ExtractionError
    from plex_etl.mysql import SourceConnectionError
    from plex_etl.sources import SourceConfigError
    from plex_etl.typemap import TypeMappingError, ValueConversionError
    from plex_etl.warehouse.base import WarehouseError
    from plex_etl.yamlio import YamlFileError

    return (PlanError, ExtractionError, SourceConnectionError, SourceConfigError, TypeMappingError,
            ValueConversionError, WarehouseError, FileNotFoundError, CommandError, YamlFileError, CatalogError,
            SchemaDriftError, CaptureError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. An error prints one message to stderr and exits 2; `--debug` (or
    PLEX_ETL_DEBUG=1) shows the traceback instead."""
    import os

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PLEX_ETL_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except _project_errors() as exc:
        if debug:
            raise
        print(f"plex-etl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # not foreseen: still one line, the traceback with --debug
        if debug:
            raise
        from plex_etl.reconcile import error_text

        print(f"plex-etl {args.command}: unexpected error: {error_text(exc)} (--debug shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
