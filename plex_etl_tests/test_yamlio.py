"""The C YAML loader gives the same values as PyYAML's pure-Python SafeLoader on every
committed YAML file (catalogs, plans, sources, demo schemas), and loading Definitions
imports neither SQLAlchemy, duckdb, sqlglot, the BigQuery client nor pyarrow and numpy."""

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
