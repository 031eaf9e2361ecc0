"""`plex-etl replicate` and `plex-etl compare` from the command line, as an operator runs them:
real subprocesses, a temporary Dagster home, the test databases and a local warehouse."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from plex_etl_tests.replication import point_at_test_databases

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    """`plex-etl ARGS` (as `python -m plex_etl.cli`, so that this checkout's code runs)."""
    env = dict(os.environ, DAGSTER_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "plex_etl.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=420)


@pytest.fixture
def home(demo_sources, tmp_path, monkeypatch) -> Path:
    point_at_test_databases(monkeypatch, demo_sources, tmp_path / "warehouse.duckdb")
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.timeout(900)
def test_replicate_then_compare(home: Path):
    replicated = run("replicate", "--source", "quantio", "--days", "2", home=home)
    assert replicated.returncode == 0, replicated.stderr[-3000:]
    commands = [line for line in replicated.stdout.splitlines() if line.startswith("$ ")]
    # Snapshots first (no partition: the whole table, today's snapshot), then the dated tables.
    assert len(commands) == 2 and "--partition" not in commands[0] and "--partition-range" in commands[1]
    assert replicated.stdout.count("run succeeded") == 2
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    assert len(runs) == 2 and all(r.is_success for r in runs)

    compared = run("compare", "--source", "quantio", "--days", "2", home=home)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    lines = compared.stdout.splitlines()
    assert lines[0].split() == ["table", "strategy", "mysql", "warehouse", "equal"]
    assert lines[-1].startswith("total") and lines[-1].endswith("yes")
    assert all(line.endswith("yes") for line in lines[1:])


def test_compare_fails_when_the_warehouse_is_empty(home: Path):
    compared = run("compare", "--source", "quantio", "--days", "2", home=home)
    assert compared.returncode == 1
    assert "NO" in compared.stdout
