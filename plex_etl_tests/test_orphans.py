"""Orphan checks warn only about a real problem: a child row whose parent the warehouse should
hold (MySQL has it and its day was loaded since the child landed) and does not.

The demo's 7-day load (`make demo`: `plex-etl replicate --days 7`) used to report 876 orphans of
factcabecera for FK_FactCabecera_Clientes, a key MySQL enforces: the invoices of the last 7 days
reference clientes of older days, which that load does not bring. They now wait for their parent,
counted, and the check passes; once such a parent's day is loaded, the parent is there, and if it
then goes missing from the warehouse the check names it.
"""

import datetime as dt
import re

import dagster as dg
import duckdb

from plex_etl.catalog.store import load_source_catalog
from plex_etl.orphans import Candidate, judge, normalized, parent_partitions, partition_of
from plex_etl_tests.replication import build_defs, materialize, point_at_test_databases

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_a_candidate_is_an_orphan_only_when_the_warehouse_should_hold_its_parent():
    lost, late, gone, history = (Candidate((1,), 3, T0), Candidate((2,), 1, T0), Candidate((3,), 2, T0),
                                 Candidate((4,), 5, T0))
    loads = {"2026-11-19": T0 + dt.timedelta(hours=1),  # loaded again after the children landed
             "2026-11-20": T0 - dt.timedelta(hours=6)}  # loaded before: the parent came later
    judgement = judge(
        "factcabecera", "clientes", ("IDCliente",), total_rows=12,
        candidates=[lost, late, gone, history],
        parent_partitions={(1,): "2026-11-19", (2,): "2026-11-20", (4,): "2026-11-01"},  # 3: not in MySQL
        loaded_at=loads.get,  # 2026-11-01 never loaded
    )
    assert judgement.orphans == [(lost, "2026-11-19")]
    assert judgement.waiting == [(late, "2026-11-20"), (history, "2026-11-01")]
    assert judgement.missing_in_mysql == [gone]
    assert (judgement.orphan_rows, judgement.waiting_rows, judgement.missing_rows) == (3, 6, 2)
    assert judgement.unclassified_rows == 1  # beyond the keys looked up
    text = judgement.describe()
    assert text.startswith("3 factcabecera rows without their clientes row although MySQL has it and its day "
                           "was loaded since they landed, e.g. IDCliente=1 (day 2026-11-19)")
    assert "6 wait for their clientes row, whose day was not loaded since they landed (2 days: day 2026-11-01, " \
           "day 2026-11-20)" in text
    assert "2 reference a clientes row MySQL lacks too (as in MySQL), e.g. IDCliente=3" in text
    assert "1 not classified" in text

    fine = judge("factlineas", "factcabecera", ("IDComprobante",), 0, [], {}, loads.get)
    assert fine.describe() == "no factlineas row lacks a factcabecera row the warehouse should hold"


def test_parent_days_become_partitions_in_batches():
    first, today = dt.date(2026, 11, 1), dt.date(2026, 12, 4)
    assert partition_of(dt.date(2019, 5, 1), first, today) == "2026-11-01"  # the history's partition
    assert partition_of(dt.date(2027, 1, 1), first, today) == "2026-12-04"  # future-dated: today's
    assert partition_of(None, first, today) == ""  # a snapshot: its latest snapshot
    statements = []

    def fetch(sql, params):
        statements.append((sql, len(params)))
        return [(v, dt.datetime(2026, 11, 20, 9, 30)) for k, v in params.items() if v % 2 == 0]

    found = parent_partitions(fetch, lambda n: f"{n} keys", [(k,) for k in range(1, 1202)], first, today)
    assert [s for s, _ in statements] == ["500 keys", "500 keys", "201 keys"]
    assert len(found) == 600 and found[(2,)] == "2026-11-20" and (3,) not in found
    assert normalized(("7", 7, dt.date(2026, 1, 2))) == ("7", 7, "2026-01-02")


def orphan_evaluations(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]):
    checks = list(defs.asset_checks or [])
    result = dg.materialize([*defs.assets, *checks], selection=dg.AssetSelection.checks(*keys),
                            resources=defs.resources, instance=instance)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_demo_7_day_load_warns_of_no_orphan_and_a_lost_parent_is_named(
        demo_sources, demo_end_date, tmp_path, monkeypatch):
    warehouse_file = tmp_path / "warehouse.duckdb"
    point_at_test_databases(monkeypatch, demo_sources, warehouse_file)
    defs = build_defs()
    instance = dg.DagsterInstance.ephemeral()
    _, plan = load_source_catalog("plex")
    # As `plex-etl replicate --days 7` loads: today's snapshots, then the dated tables' last 7 days.
    snapshots = [f"plex/{p.table}" for p in plan.included if p.strategy == "snapshot"]
    dated = [f"plex/{p.table}" for p in plan.included if p.strategy != "snapshot"]
    assert materialize(defs, snapshots, None, instance=instance).success
    assert materialize(defs, dated, demo_end_date - dt.timedelta(days=6), demo_end_date, instance=instance).success

    orphan_keys = [k for c in defs.asset_checks or [] for k in c.check_keys
                   if k.name.startswith("no_orphans_") and k.asset_key.path[0] == "plex"]
    evaluations = orphan_evaluations(defs, instance, orphan_keys)
    assert len(evaluations) == len(orphan_keys) > 40
    warned = {name: e.description for name, e in evaluations.items() if not e.passed}
    assert not warned, warned
    clientes = evaluations["no_orphans_FK_FactCabecera_Clientes"]
    assert clientes.metadata["orphans"].value == 0
    assert clientes.metadata["waiting_for_parent"].value > 0  # the old "orphans": clientes of older days
    assert clientes.metadata["missing_in_mysql_too"].value == 0  # MySQL enforces the key
    assert "wait for their clientes row, whose day was not loaded since they landed" in clientes.description

    # Load the day of one waiting client: it is in the warehouse now, no longer waiting.
    key, day = re.search(r"IDCliente=(\d+) \(day (\S+)\)", clientes.metadata["examples"].value).groups()
    assert materialize(defs, ["plex/clientes"], dt.date.fromisoformat(day), instance=instance).success
    check = dg.AssetCheckKey(dg.AssetKey(["plex", "factcabecera"]), "no_orphans_FK_FactCabecera_Clientes")
    after = orphan_evaluations(defs, instance, [check])["no_orphans_FK_FactCabecera_Clientes"]
    assert after.passed and f"IDCliente={key} " not in after.metadata["examples"].value
    assert after.metadata["waiting_for_parent"].value < clientes.metadata["waiting_for_parent"].value
    # Lost from the warehouse after its day was loaded: a real orphan, named.
    with duckdb.connect(str(warehouse_file)) as connection:
        connection.execute(f"DELETE FROM plex_analytics.plex_clientes WHERE CodCliente = {int(key)}")
    lost = orphan_evaluations(defs, instance, [check])["no_orphans_FK_FactCabecera_Clientes"]
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.WARN
    assert lost.metadata["orphans"].value >= 1
    assert "factcabecera rows without their clientes row although MySQL has it" in lost.description
    assert f"IDCliente={key} (day {day})" in lost.description
