"""`plex-etl`: the project's command line (demo databases, discovery)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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

    run_discover(
        get_source(args.source),
        include=args.include or (),
        exclude=args.exclude or (),
        docs_directory=Path(args.docs),
    )
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


def _cmd_replicate(args: argparse.Namespace) -> int:
    """Materialize the last N days (or all days) and today's snapshots through the Dagster CLI.

    Each source's dated tables load in one run (a single-run backfill of the range); the
    commands are printed so they can be run, or adapted, by hand.
    """
    import shutil
    import subprocess
    from pathlib import Path

    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    base = [dagster, "asset", "materialize", "-m", "plex_etl.definitions"]
    if not args.multiprocess:
        # One process for the whole run: on small data, starting a process per step costs more
        # than the step itself. Scheduled runs keep Dagster's multiprocess executor.
        base += ["--config-json", '{"execution": {"config": {"in_process": {}}}}']
    commands = []
    for source in _sources_with_catalogs():
        if args.source and source.name != args.source:
            continue
        start, today = _window(source, args.days)
        if args.full:
            from plex_etl.catalog.store import load_source_catalog

            start = load_source_catalog(source.name)[1].first_day
        tag = f"tag:plex_etl/source={source.name}"
        commands.append([*base, "--select", f"{tag} and not tag:plex_etl/strategy=snapshot",
                         "--partition-range", f"{start}...{today}"])
        commands.append([*base, "--select", f"{tag} and tag:plex_etl/strategy=snapshot", "--partition", str(today)])
    if not args.source:
        commands.append([*base, "--select", "group:views"])
    for command in commands:
        print("$ " + " ".join(f"'{c}'" if " " in c else c for c in command[1:]), flush=True)
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            print(completed.stdout[-5000:] + completed.stderr[-5000:], file=sys.stderr)
            return completed.returncode
        print("  run succeeded", flush=True)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Print MySQL vs warehouse row counts per table for the last N days."""
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.compare import count_tables, format_counts
    from plex_etl.definitions import defs

    resource = defs.resources["warehouse"]
    warehouse = resource.get()
    counts = []
    for source in _sources_with_catalogs():
        catalog, plan = load_source_catalog(source.name)
        start, today = _window(source, args.days)
        counts += count_tables(source, catalog, plan, warehouse, resource.dataset, start, today)
    print(format_counts(counts))
    return 0 if all(c.equal for c in counts) else 1


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

    replicate = commands.add_parser("replicate", help="materialize the last N days of every source")
    replicate.add_argument("--days", type=int, default=7)
    replicate.add_argument("--source", help="only this source (default: every source with a catalog)")
    replicate.add_argument("--full", action="store_true", help="every partition since the plan's first_day")
    replicate.add_argument("--multiprocess", action="store_true", help="one process per step (Dagster's default)")
    replicate.set_defaults(func=_cmd_replicate)

    compare = commands.add_parser("compare", help="MySQL vs warehouse row counts for the last N days")
    compare.add_argument("--days", type=int, default=7)
    compare.set_defaults(func=_cmd_compare)

    pools = commands.add_parser("pools", help="set each source's Dagster pool to its sources.yaml pool_limit")
    pools.set_defaults(func=_cmd_pools)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
