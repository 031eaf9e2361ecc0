"""The C YAML loader gives the same values as PyYAML's pure-Python SafeLoader on every
committed YAML file (catalogs, plans, sources, demo schemas), and loading Definitions
imports neither SQLAlchemy, duckdb, sqlglot, the BigQuery client nor pyarrow and numpy."""

import marshal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plex_etl import yamlio

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "plex_etl").rglob("*.yaml"))


def test_the_c_loader_is_used_when_available():
    assert yaml.__with_libyaml__, "PyYAML without libyaml: catalogs load ~7x slower"
    assert yamlio.SAFE_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_same_values_as_the_python_loader(path):
    text = path.read_text()
    assert yamlio.safe_load(text) == yaml.safe_load(text)


def test_definitions_import_no_database_cloud_or_arrow_library():
    code = (
        "import sys, plex_etl.definitions\n"
        "heavy = ['sqlalchemy', 'duckdb', 'sqlglot', 'google.cloud.bigquery', 'MySQLdb', 'pymysql',\n"
        "         'pyarrow', 'numpy']\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_parsed_files_come_back_from_the_cache_until_the_text_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PLEX_ETL_CACHE_DIR", str(tmp_path / "cache"))
    catalog = tmp_path / "plex.catalog.yaml"
    catalog.write_text((REPO / "plex_etl" / "config" / "plex.catalog.yaml").read_text())
    first = yamlio.load_file(catalog)
    (entry,) = (tmp_path / "cache").glob("plex.catalog.yaml.*.marshal")
    assert yamlio.load_file(catalog) == first == yaml.safe_load(catalog.read_text())

    # The cached value is what is read: a value planted in the entry comes back ...
    planted = {"tables": {}}
    entry.write_bytes(marshal.dumps(planted))
    assert yamlio.load_file(catalog) == planted
    # ... but an edited file is parsed again, never served the old text's value.
    catalog.write_text("tables:\n  t: {a: 1}\n")
    assert yamlio.load_file(catalog) == {"tables": {"t": {"a": 1}}}

    # A damaged entry is parsed again; a value marshal cannot hold (dates) is not cached.
    for damaged in (tmp_path / "cache").glob("*.marshal"):
        damaged.write_bytes(b"\x00garbage")
    assert yamlio.load_file(catalog) == {"tables": {"t": {"a": 1}}}
    plan = tmp_path / "plex.plan.yaml"
    plan.write_text("defaults: {first_day: 2025-01-01}\n")
    assert yamlio.load_file(plan) == yaml.safe_load(plan.read_text())
    assert not list((tmp_path / "cache").glob("plex.plan.yaml.*"))


def test_an_unwritable_cache_only_costs_the_parse(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("PLEX_ETL_CACHE_DIR", str(blocker / "cache"))
    sources = REPO / "plex_etl" / "config" / "sources.yaml"
    assert yamlio.load_file(sources) == yaml.safe_load(sources.read_text())
