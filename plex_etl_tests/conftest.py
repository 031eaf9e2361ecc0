"""Shared fixtures: the real MariaDB at 127.0.0.1:3306 and demo databases built for tests.

Tests never touch the demo databases `plex` and `quantio`: they build their own copies
(`plexetl_test_plex`, `plexetl_test_quantio`) once per session at a small scale.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from plex_etl.sources import Source, get_source, with_database

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "plex-reference"  # copied from shared/, see its README
TEST_SCALE = 0.001
TEST_DAYS = 30
TEST_SEED = 7


def test_source(name: str, database: str) -> Source:
    """The configured source `name`, pointed at another database on the same server."""
    return with_database(get_source(name), database)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.exists():
        pytest.fail(f"plex-reference not found at {REFERENCE} (it is part of the repository)")
    return REFERENCE


@pytest.fixture(scope="session")
def demo_end_date() -> dt.date:
    """Today in the sources' time zone: the latest daily partition."""
    return dt.datetime.now(ZoneInfo(get_source("plex").time_zone)).date()


@pytest.fixture(scope="session")
def demo_sources(demo_end_date: dt.date) -> dict[str, Source]:
    """plex and quantio demo databases built once for the whole test session."""
    from plex_etl.demo.builder import build_demo

    prefix = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")  # parallel sessions differ
    sources = {
        "plex": test_source("plex", f"{prefix}_plex"),
        "quantio": test_source("quantio", f"{prefix}_quantio"),
    }
    for source in sources.values():
        build_demo(
            source, scale=TEST_SCALE, days=TEST_DAYS, seed=TEST_SEED, force=True,
            end_date=demo_end_date, log=lambda _msg: None,
        )
    return sources


@pytest.fixture(scope="session")
def kinds(tmp_path_factory: pytest.TempPathFactory):
    """test_values.py's scratch database of every type family, built once for both warehouses."""
    from plex_etl_tests.test_values import build_kinds

    scratch = build_kinds(tmp_path_factory.mktemp("values") / "config")
    yield scratch
    scratch.drop()


@pytest.fixture(autouse=True)
def _no_dagster_home_leak(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    # Tests use ephemeral or temporary Dagster instances, never the developer's .dagster_home.
    if "DAGSTER_HOME" in os.environ:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _drop_scratch_databases():
    """Drop the scratch databases a test created (test_schema_evolution.scratch_source), even
    when it failed."""
    yield
    from plex_etl_tests.test_schema_evolution import CREATED

    while CREATED:
        CREATED.pop().drop()
