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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
