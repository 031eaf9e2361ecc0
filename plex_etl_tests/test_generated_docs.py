"""The committed generated documents (docs/catalog/<source>.md) are what `plex-etl discover`
writes now.

`discover` runs, as the CLI runs it (with the "Access paths" section), on the demo databases the
tests build, against a copy of the committed catalog and plan, and its document must equal the
committed one, but for what depends on the database's name and contents rather than on the
code, catalog and plan:

- the database's name in the title (the tests' databases carry a prefix);
- the sizes in MB and the sample behind an inferred relationship (n/n sampled values);
- in "Access paths", the day explained (yesterday) and MySQL's row estimates for it (EXPLAIN's
  figures vary with the data's days, the sample and InnoDB's statistics), and the optimizer's
  join order within a key range or index path. The kind of access path of each table (key
  range, index, full scan of which table, snapshot), why, how many of each, and the indexes
  proposed to a DBA are compared: they follow from the schema, the plan and the code.

Row estimates in the table list are compared as written: `discover` keeps a committed figure
while InnoDB's estimate stays within 25% (docs/design-notes.md), and the tests' databases have
the demo's scale. The catalog itself must come out unchanged.

To regenerate after a change: `make demo`, then `plex-etl discover --source plex` (and quantio).
"""

import difflib
import re
import shutil

import pytest

from plex_etl.catalog.store import run_discover
from plex_etl.sources import PACKAGE_CONFIG_DIR
from plex_etl_tests.conftest import REPO

ACCESS = "## Access paths"


def _mask_row(match: re.Match) -> str:
    """One row of the access paths table, without MySQL's figures."""
    cells = match.group(0).split(" | ")
    if len(cells) != 6 or cells[0] == "| table":
        return match.group(0)
    # The kind of path is the code's decision; the join order and access types are the optimizer's.
    cells[2] = re.sub(r"^(key range|index): .*$", r"\1: ...", cells[2])
    cells[3] = re.sub(r"^[\d,]+$", "N", cells[3])
    cells[4] = re.sub(r"^[\d,]+$", "N", cells[4])
    cells[5] = re.sub(r"within \d+ day\(s\) \([\d,]+ sampled rows\)", "within N day(s) (N sampled rows)", cells[5])
    return " | ".join(cells)


def comparable(text: str, database: str, name: str) -> str:
    """The document with the parts that depend on the database's name and contents masked."""
    text = text.replace(f"(database `{database}`)", f"(database `{name}`)", 1)
    text = re.sub(r"inferred \(\d+/\d+ sampled values match\)", "inferred (N/N sampled values match)", text)
    text = re.sub(r"~([\d,]+) rows, [\d.]+ MB\.", r"~\1 rows, N MB.", text)
    start = text.find(ACCESS)
    if start < 0:
        return text
    end = text.find("\n## ", start + len(ACCESS))
    end = len(text) if end < 0 else end
    section = re.sub(r"one-day partition \(\d{4}-\d{2}-\d{2}\)", "one-day partition (DAY)", text[start:end])
    return text[:start] + re.sub(r"(?m)^\| .*$", _mask_row, section) + text[end:]


@pytest.mark.parametrize("name", ["plex", "quantio"])
def test_committed_catalog_docs_are_what_discover_writes(name, demo_sources, tmp_path):
    from plex_etl.cli import _access_section

    source = demo_sources[name]
    config = tmp_path / "config"
    config.mkdir()
    for suffix in ("catalog.yaml", "plan.yaml"):
        shutil.copy(PACKAGE_CONFIG_DIR / f"{name}.{suffix}", config / f"{name}.{suffix}")
    report = run_discover(
        source, directory=config, docs_directory=tmp_path / "docs", log=lambda _line: None,
        access=lambda connection, catalog, plan: _access_section(source, connection, catalog, plan),
    )
    assert report.changes == [], f"the committed catalog of {name} differs from its database: {report.changes}"
    assert report.proposals == []
    written = (tmp_path / "docs" / f"{name}.md").read_text()
    committed = (REPO / "docs" / "catalog" / f"{name}.md").read_text()
    assert ACCESS in written and ACCESS in committed
    expected, actual = comparable(committed, name, name), comparable(written, source.database, name)
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(), f"docs/catalog/{name}.md",
                                          "what discover writes", lineterm="", n=1))
    assert expected == actual, (
        f"docs/catalog/{name}.md is not what `plex-etl discover --source {name}` writes (regenerate it on the "
        f"demo database, `make demo`):\n{diff[:6000]}"
    )
