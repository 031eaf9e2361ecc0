"""The code location's shape as a reviewed snapshot: asset keys, groups, deps, partitioning,
check names, sensors and schedules (as dagster-open-platform tests its definitions).

A change to the catalog, a plan or the asset factory shows here as a readable diff. After an
intended change: `PLEX_ETL_UPDATE_SNAPSHOT=1 pytest plex_etl_tests/test_definitions_snapshot.py`
and commit `plex_etl_tests/data/definitions.json`.
"""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).parent / "data" / "definitions.json"


def shape(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "tier": node.tags.get("plex_etl/tier"),
            "checks": sorted(checks.get(key.to_user_string(), [])),
        }
    return {
        "assets": assets,
        "sensors": sorted(s.name for s in defs.sensors or []),
        "schedules": sorted(s.name for s in defs.schedules or []),
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
    }


@pytest.fixture
def defs(monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.delenv("PLEX_ETL_CONFIG_DIR", raising=False)
    from plex_etl.definitions import build_definitions

    return build_definitions()


def test_definitions_match_the_reviewed_snapshot(defs: dg.Definitions):
    current = shape(defs)
    if os.environ.get("PLEX_ETL_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    for section in ("sensors", "schedules", "jobs"):
        assert current[section] == expected[section], section
    assert sorted(current["assets"]) == sorted(expected["assets"])
    for key, node in expected["assets"].items():
        assert current["assets"][key] == node, key


def test_every_table_has_its_two_blocking_checks_and_snapshots_have_no_partitions(defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if "plex_etl/source" not in node.tags:  # the views, the replication status
            continue
        names = {k.name for k in graph.asset_check_keys if k.asset_key == key}
        assert {"schema_matches_catalog", "row_count_matches_mysql", "warehouse_equals_mysql"} <= names, key
        assert (node.partitions_def is None) == (node.tags["plex_etl/strategy"] == "snapshot"), key
    blocking = [s for s in (c for a in defs.asset_checks or [] for c in a.check_specs) if s.blocking]
    assert {s.name for s in blocking} == {"schema_matches_catalog", "row_count_matches_mysql"}
