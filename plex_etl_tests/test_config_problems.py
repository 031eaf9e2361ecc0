"""A broken plan entry or plan file keeps out only what it breaks, and says so where the operator
looks (issue 24): on a copy of the committed configuration, a YAML error inside factcabecera's
entry keeps out factcabecera, the child tables read through it and the views over them, with the
file and line named; the other 36 plex tables and quantio load. A broken plan file keeps its
source out, named with its line, and `dagster asset list` says so (exit 1 in strict mode). The
UI test runs `dagster dev` (webserver and daemon) on that configuration and reads, as the UI
does, the stand-ins' descriptions and their failed `configuration_valid` checks, reported by
the daemon's first sensor tick without any run. No database is needed: loading the code
location reads only files. A table renamed in MySQL: test_code_location.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from plex_etl.catalog.plan import PlanError, load_plan, propose_missing
from plex_etl.catalog.store import load_source, load_source_catalog
from plex_etl.defs.problems import CONFIGURATION_CHECK, ERRORS_GROUP, PROBLEMS_SENSOR
from plex_etl.sources import PACKAGE_CONFIG_DIR
from plex_etl_tests.test_ui import free_port, wait_for

DAGSTER = Path(sys.executable).parent / "dagster"
CHILDREN = ["factcoberturas", "factlineas", "factlineasbonificaciones", "factlineascostos", "factpagos",
            "factreglasaplicadas"]  # read through factcabecera (strategy child, at any depth)
BROKEN_VIEWS = ["v_facturas_consolidated", "v_prescriptions_tracking", "v_ventas_analysis"]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the committed configuration, selected by PLEX_ETL_CONFIG_DIR."""
    directory = tmp_path / "config"
    shutil.copytree(PACKAGE_CONFIG_DIR, directory)
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(directory))
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.delenv(STRICT, raising=False)
    return directory


STRICT = "PLEX_ETL_STRICT_CONFIG"


def edit(path: Path, old: str, new: str) -> int:
    """Replace `old` (once) in a file; returns the 1-based line where it was."""
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


def break_factcabecera(config: Path) -> int:
    """A missing `]` in factcabecera's entry; returns its line."""
    return edit(config / "plex.plan.yaml", "    date_columns: [Emision]\n", "    date_columns: [Emision\n")


def test_a_broken_plan_entry_keeps_out_its_table_children_and_views(config: Path):
    from plex_etl.definitions import build_definitions

    line = break_factcabecera(config)
    edit(config / "plex.plan.yaml", "  asientos:\n    strategy: event\n", "  asientos:\n    strategy: evnt\n")
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    stand_ins = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()
                 if graph.get(k).group_name == ERRORS_GROUP}
    broken = ["factcabecera", "asientos", "asientos_detalle", *CHILDREN]
    assert sorted(stand_ins) == sorted([*(f"plex/{t}" for t in broken), *(f"views/{v}" for v in BROKEN_VIEWS)])
    loaded = [k for k in graph.get_all_asset_keys() if k.path[0] == "plex" and graph.get(k).group_name != ERRORS_GROUP]
    assert len(loaded) == 44 - len(broken)
    assert graph.get(dg.AssetKey(["views", "v_inventory_status"])).group_name == "views"  # its tables load
    assert any(k.path[0] == "quantio" for k in graph.get_all_asset_keys())
    # Each says what is wrong and where: the file and line, the field, or the table it comes through.
    head = stand_ins["plex/factcabecera"].metadata["plex_etl/problem"].value
    assert f"{config / 'plex.plan.yaml'}, line {line + 1}" in head and f"started at line {line}" in head
    assert "in the entry of table factcabecera" in head
    assert "strategy 'evnt' is not one of event, child, upsert, snapshot" in stand_ins["plex/asientos"].description
    assert "its days come from table asientos, which does not load" in stand_ins["plex/asientos_detalle"].description
    lines = stand_ins["plex/factcoberturas"].description
    assert "its days come from table factcabecera (through factlineas), which does not load" in lines
    assert "it reads plex_factcabecera" in stand_ins["views/v_facturas_consolidated"].description
    # Every stand-in has the failing check; its materialization fails with the message.
    assert {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == CONFIGURATION_CHECK} == set(
        stand_ins)
    result = dg.materialize([defs.get_assets_def(dg.AssetKey(["plex", "factcabecera"]))], raise_on_error=False)
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "in the entry of table factcabecera" in str(failure.message)
    # Commands that act on the whole source refuse it, naming every problem.
    with pytest.raises(PlanError, match=r"plex\.plan\.yaml") as refused:
        load_source_catalog("plex")
    assert "factcabecera" in str(refused.value) and "evnt" in str(refused.value)
    # `discover` never proposes a broken entry again (the file would hold it twice).
    proposals = propose_missing(load_plan(config / "plex.plan.yaml", "plex"), load_source("plex").catalog)
    assert proposals == []


def test_a_broken_plan_file_keeps_its_source_out_and_dagster_asset_list_says_so(config: Path):
    line = edit(config / "plex.plan.yaml", "  window_days: 31 ", "  window_days: [31 ")
    listing = subprocess.run([str(DAGSTER), "asset", "list", "-m", "plex_etl.definitions"], capture_output=True,
                             text=True, timeout=120, cwd=config.parent)
    assert listing.returncode == 0, listing.stderr
    keys = listing.stdout.split()
    assert "plex/configuration" in keys and "quantio/stock" in keys and "plex/factcabecera" not in keys
    assert "source 'plex' skipped" in listing.stderr
    assert f"{config / 'plex.plan.yaml'}, line {line + 1}" in listing.stderr, listing.stderr
    strict = subprocess.run([str(DAGSTER), "asset", "list", "-m", "plex_etl.definitions"], capture_output=True,
                            text=True, timeout=120, cwd=config.parent, env={**os.environ, STRICT: "1"})
    assert strict.returncode == 1 and "1 configuration problem(s)" in strict.stderr
    assert "plex.plan.yaml, line" in strict.stderr


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


ERRORS_QUERY = ("{ assetNodes(group: {groupName: \"" + ERRORS_GROUP + "\", repositoryName: \"__repository__\", "
                "repositoryLocationName: \"plex_etl.definitions\"}) { assetKey { path } description "
                "assetChecksOrError { ... on AssetChecks { checks { name "
                "executionForLatestMaterialization { status } } } } } }")


@pytest.mark.timeout(180)
def test_the_ui_shows_each_problem_as_a_failed_check(config: Path, tmp_path: Path):
    """`dagster dev` (webserver and daemon, as an operator runs it) on a configuration with a
    broken entry: the stand-ins are in their group with the message, and the daemon's first tick
    of the problems sensor marks their check failed without any run."""
    break_factcabecera(config)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    with (tmp_path / "dev.log").open("w") as log:
        dev = subprocess.Popen([str(DAGSTER), "dev", "-m", "plex_etl.definitions", "-h", "127.0.0.1", "-p", str(port)],
                               env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/server_info", timeout=90)
        deadline = time.monotonic() + 90
        while True:
            nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(url, ERRORS_QUERY)["assetNodes"]}
            statuses = {k: [(c["name"], (c["executionForLatestMaterialization"] or {}).get("status"))
                            for c in n["assetChecksOrError"]["checks"]] for k, n in nodes.items()}
            if nodes and all(s == [(CONFIGURATION_CHECK, "FAILED")] for s in statuses.values()):
                break
            assert time.monotonic() < deadline, f"checks not reported by {PROBLEMS_SENSOR}: {statuses}"
            time.sleep(2)
        assert sorted(nodes) == sorted([
            "plex/factcabecera", *(f"plex/{t}" for t in CHILDREN), *(f"views/{v}" for v in BROKEN_VIEWS)])
        description = nodes["plex/factcabecera"]["description"]
        assert description.startswith("ERROR: this asset does not load (configuration).")
        assert "plex.plan.yaml, line" in description and "in the entry of table factcabecera" in description
        runs = graphql(url, "{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"]
        assert runs == []  # reported by the sensor, not by a run
    finally:
        os.killpg(dev.pid, signal.SIGTERM)  # dagster dev's own process group (webserver, daemon, code servers)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)


def test_accept_judges_the_entries_it_accepts(config: Path, capsys: pytest.CaptureFixture):
    """`plex-etl accept` accepts a sound proposal while another entry is broken (and says so),
    and refuses, leaving the file as it was, a proposal that would not load."""
    from plex_etl.cli import main

    plans = config / "plex.plan.yaml"
    break_factcabecera(config)
    edit(plans, "  asientos:\n    strategy: event\n", "  asientos:\n    proposed: true\n    strategy: event\n")
    assert main(["accept", "--source", "plex"]) == 0
    out, err = capsys.readouterr()
    assert "accepted 1 proposed entry: asientos" in out
    assert "warning: table factcabecera does not load" in err and "plex.plan.yaml, line" in err
    edit(plans, "  asientos:\n    strategy: event\n", "  asientos:\n    proposed: true\n    strategy: evnt\n")
    before = plans.read_text()
    assert main(["accept", "--source", "plex"]) == 2
    assert "strategy 'evnt' is not one of" in capsys.readouterr().err
    assert plans.read_text() == before
