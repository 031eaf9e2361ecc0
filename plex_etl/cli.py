"""`plex-etl`: the project's command line (demo databases, discovery)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any


def _cmd_demo_db(args: argparse.Namespace) -> int:
    from plex_etl.demo.builder import DEMO_SOURCES, build_demo
    from plex_etl.sources import get_source

    names = DEMO_SOURCES if args.source == "all" else (args.source,)
    for name in names:
        build_demo(
            get_source(name), scale=args.scale, days=args.days, seed=args.seed, force=args.force
        )
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
    import datetime as dt

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
    import datetime as dt
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo(source.time_zone)).date()
    return today - dt.timedelta(days=days - 1), today


def _dagster_base(multiprocess: bool) -> list[str]:
    """`dagster asset materialize` of the code location, in one process unless asked otherwise."""
    import json
    import shutil
    from pathlib import Path

    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    # The console shows INFO and above: a range run's DEBUG lines (one per day and table for
    # its planned and materialized events) are formatted for a console nobody reads here, and
    # the event log keeps every event anyway.
    config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
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
    (killed after STOP_GRACE_SECONDS) and plex-etl exits with 128 + the signal number.
    """
    import signal
    import subprocess

    print("$ " + " ".join(f"'{c}'" if " " in c else c for c in [*base[1:], *arguments]), flush=True)
    child = subprocess.Popen([*base, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not received:
            print(f"plex-etl: signal {signum}: stopping the Dagster run (pid {child.pid})", file=sys.stderr,
                  flush=True)
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        deadline = None
        while True:
            try:
                stdout, stderr = child.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
                if deadline is not None and time.monotonic() > deadline:
                    child.kill()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        print(f"plex-etl: stopped by signal {received[0]} (the run's exit code: {child.returncode})",
              file=sys.stderr, flush=True)
        return 128 + received[0]
    if child.returncode != 0:
        print(stdout[-5000:] + stderr[-5000:], file=sys.stderr)
        return child.returncode
    print("  run succeeded", flush=True)
    return 0


def _cmd_replicate(args: argparse.Namespace) -> int:
    """Materialize the last N days (or all days) and today's snapshots through the Dagster CLI.

    Each source loads in two runs: its snapshot tables (unpartitioned: the whole table, as
    today's snapshot), then the dated tables over the range (a single-run backfill), so that
    every parent has landed before its children's orphan checks run. The commands are
    printed so they can be run, or adapted, by hand.
    """
    from plex_etl.catalog.store import load_source_catalog

    base = _dagster_base(args.multiprocess)
    runs = []
    for source in _sources_with_catalogs():
        if args.source and source.name != args.source:
            continue
        catalog, plan = load_source_catalog(source.name)
        start, today = _window(source, args.days)
        if args.full:
            start = plan.first_day
        # Snapshots first, so that the dated tables' orphan checks find their parents.
        snapshots = [p.table for p in plan.included if p.strategy == "snapshot"]
        dated = [p.table for p in plan.included if p.strategy != "snapshot"]
        if snapshots:
            runs.append(["--select", _key_selection(source.name, catalog, snapshots)])
        if dated:
            runs.append(["--select", _key_selection(source.name, catalog, dated),
                         "--partition-range", f"{start}...{today}"])
    if not runs:
        print("nothing to replicate: no source with a catalog and an included table"
              + (f" named {args.source}" if args.source else ""), file=sys.stderr)
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

    from plex_etl.defs.resources import warehouse_from_environment
    from plex_etl.extract.spec import replicated_table
    from plex_etl.mysql import connect
    from plex_etl.reconcile import error_text, reconcile_table, value_coverage

    resource = warehouse_from_environment()
    warehouse = resource.get()
    differing = 0
    for source, catalog, plan, tables in _comparison_tables(args.source, args.table):
        today = _window(source, 1)[1]
        with connect(source) as connection:
            for table in tables:
                spec = replicated_table(catalog, plan, table, resource.dataset)
                coverage = value_coverage(plan, spec, today)
                try:
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
                for first, last in _ranges(result.partitions_to_reload(today)):
                    if spec.plan.strategy == "snapshot":  # unpartitioned: today's snapshot
                        days = []
                    elif first == last:
                        days = ["--partition", str(first)]
                    else:
                        days = ["--partition-range", f"{first}...{last}"]
                    code = _materialize(_dagster_base(multiprocess=False), [
                        "--select", _key_selection(source.name, catalog, [table]), *days,
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


def _ranges(days: list) -> list[tuple]:
    """Consecutive days grouped into (first, last) ranges."""
    import datetime as dt

    ranges: list[tuple] = []
    for day in days:
        if ranges and ranges[-1][1] + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _cmd_cleanup(args: argparse.Namespace) -> int:
    """Remove what killed loads left behind: local staging folders in the temp directory and,
    on BigQuery, staging tables of the dataset older than --hours."""
    import datetime as dt

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


def _cmd_pools(args: argparse.Namespace) -> int:
    """Apply each source's `pool_limit` to the Dagster instance of $DAGSTER_HOME."""
    import dagster as dg

    from plex_etl.defs.pools import apply_pool_limits
    from plex_etl.sources import load_sources

    with dg.DagsterInstance.get() as instance:
        for pool, limit in apply_pool_limits(instance, load_sources().values()).items():
            print(f"pool {pool}: {limit} concurrent extractions")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plex-etl", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also PLEX_ETL_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-db", help="build the demo plex/quantio databases")
    demo.add_argument("--scale", type=float, default=0.001, help="fraction of production rows")
    demo.add_argument("--source", choices=["plex", "quantio", "all"], default="all")
    demo.add_argument("--days", type=int, default=60, help="event dates spread over the last N days")
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
    replicate.add_argument("--full", action="store_true", help="every partition since the plan's first_day")
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

    pools = commands.add_parser("pools", help="set each source's Dagster pool to its sources.yaml pool_limit")
    pools.set_defaults(func=_cmd_pools)
    return parser


def _project_errors() -> tuple[type[Exception], ...]:
    """The project's own error classes: their messages already name file, source, table."""
    from plex_etl.catalog.plan import PlanError
    from plex_etl.extract.stream import ExtractionError
    from plex_etl.mysql import SourceConnectionError
    from plex_etl.sources import SourceConfigError
    from plex_etl.typemap import TypeMappingError, ValueConversionError
    from plex_etl.warehouse.base import WarehouseError

    return (PlanError, ExtractionError, SourceConnectionError, SourceConfigError, TypeMappingError,
            ValueConversionError, WarehouseError, FileNotFoundError, CommandError)


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
