"""`make dev` stops on SIGTERM and SIGINT within seconds, with everything it started.

A real `make dev` (make, `plex-etl dev`, `dagster dev`, its webserver, daemon and code servers)
against a temporary Dagster home, on a free port, started the way a background shell starts it
(SIGINT ignored: `dagster dev` alone then ignored SIGTERM as well). Once the webserver answers,
the signal goes where an operator's goes: SIGTERM to make's process (`kill`, a process manager),
SIGINT to the whole foreground process group (Ctrl-C in a terminal). Every process of the tree
must be gone within STOP_BOUND seconds.
"""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from plex_etl_tests.conftest import REPO
from plex_etl_tests.replication import point_at_test_databases
from plex_etl_tests.test_ui import free_port, wait_for

STOP_BOUND = 30.0  # plex-etl dev gives `dagster dev` 20 s for its orderly stop, then kills what is left


def descendants(root: int) -> dict[int, str]:
    """Every live process under `root` (root included), pid -> command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if fields[0] == "Z":
                continue
            parents[pid] = int(fields[1])
            commands[pid] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, IndexError, ValueError):
            continue
    found = {root} if root in parents else set()
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return {pid: commands[pid] for pid in found}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def ignore_sigint() -> None:
    """As a non-interactive shell starts a background job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["SIGTERM to make", "SIGINT to the process group"])
def test_make_dev_stops_within_seconds(how, demo_sources, tmp_path, monkeypatch):
    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), "dev", f"DAGSTER_HOME={tmp_path / 'dagster_home'}",
         f"DEV_PORT={port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=ignore_sigint,
    )
    tree: dict[int, str] = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", timeout=180)
        time.sleep(3)  # the daemon's threads are up too
        tree = descendants(make.pid)
        names = " | ".join(tree.values())
        for part in ("plex-etl dev", "dagster dev", "dagster_webserver", "dagster._daemon", "dagster api grpc"):
            assert part in names, f"{part} not running under make: {names}"
        started = time.monotonic()
        if how == "SIGTERM to make":
            os.kill(make.pid, signal.SIGTERM)
        else:
            os.killpg(make.pid, signal.SIGINT)
        while time.monotonic() - started < STOP_BOUND + 15 and any(alive(p) for p in tree):
            time.sleep(0.2)
        took = time.monotonic() - started
        left = {p: c for p, c in tree.items() if alive(p)}
        print(f"{how}: every process of `make dev` gone after {took:.1f} s")
        assert not left, f"still running {took:.0f} s after {how}: {left}"
        assert took < STOP_BOUND, f"{how}: took {took:.1f} s to stop"
        assert make.wait(timeout=5) != 0  # stopped, not finished
    finally:
        for pid in {**tree, **descendants(make.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
    assert "Shutting down Dagster services" in (tmp_path / "dev.log").read_text()
