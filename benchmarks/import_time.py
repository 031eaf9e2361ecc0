"""Time to import the code location against a bare `import dagster` (issue 14).

    .venv/bin/python -m benchmarks.import_time            # 9 interleaved rounds
    .venv/bin/python -m benchmarks.import_time --runs 15 --ref main   # also another checkout

Every import runs in a fresh interpreter (wall time of the whole process, as `dagster`
and every run's step subprocess pay it); the variants alternate round by round so the
noise of a shared machine hits them alike; medians are reported, with the ratio to the
bare `import dagster` of the same rounds. One untimed import of each variant first writes
its bytecode (`__pycache__`, as any normal install has), also when the environment sets
PYTHONDONTWRITEBYTECODE: otherwise every timed import would compile plex_etl's modules
(~0.08 s) while dagster's come precompiled from site-packages.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_import(module: str, root: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) for a fresh interpreter to import `module` with
    `root` first on the path. The CPU time suffers far less than the wall from other work on a
    shared machine."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--ref", action="append", default=[], metavar="DIR",
                        help="another checkout whose plex_etl.definitions to time as well")
    args = parser.parse_args(argv)
    variants = {"import dagster": ("dagster", REPO), "import plex_etl.definitions": ("plex_etl.definitions", REPO)}
    for ref in args.ref:
        variants[f"import plex_etl.definitions ({ref})"] = ("plex_etl.definitions", Path(ref).resolve())
    for module, root in variants.values():
        timed_import(module, root)  # writes the bytecode
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
    for _ in range(args.runs):
        for label, (module, root) in variants.items():
            times[label].append(timed_import(module, root))
    for index, kind in enumerate(("wall", "CPU")):
        print(f"\n{kind} time")
        print("| import | median s | x import dagster (medians) | x import dagster (median of rounds) | runs (s) |")
        print("| --- | --- | --- | --- | --- |")
        base = [run[index] for run in times["import dagster"]]
        for label, runs in times.items():
            values = [run[index] for run in runs]
            median = statistics.median(values)
            per_round = statistics.median(v / d for v, d in zip(values, base, strict=True))
            ratio = median / statistics.median(base)
            listed = ", ".join(f"{v:.2f}" for v in values)
            print(f"| `{label}` | {median:.2f} | {ratio:.2f}x | {per_round:.2f}x | {listed} |")


if __name__ == "__main__":
    main()
