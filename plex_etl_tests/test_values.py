"""Every value equal, or a check fails (issue 24): reconciliation compares values, not only rows.

One scratch database, built once per session, holds a row per type family (integers, unsigned
64-bit, DECIMAL small and 65-digit, FLOAT, DOUBLE, DATE, DATETIME(6), TIMESTAMP(3), TIME beyond
24 h, utf8 and latin1 text, JSON, BIT, ENUM, SET, BLOB, BINARY, zero dates, the bool and string
overrides, YEAR) and a table without a primary key. The scenario, on both warehouses (local
here, BigQuery in test_replication_bigquery.py): replicate everything, compare equal (the fixes
of zero dates included, MySQL reading each table once), edit one value of each family in rows
older than the lookback, find every edit (ERROR, key, column, both values) and repair by
reloading that day. The commands' honesty about empty or failing comparisons is tested here too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from plex_etl.catalog.store import load_source_catalog, run_discover
from plex_etl.cli import main
from plex_etl.defs.checks import RECONCILE_CHECK
from plex_etl.extract.spec import replicated_table
from plex_etl.mysql import connect
from plex_etl.reconcile import TableReconciliation, reconcile_table, value_coverage
from plex_etl.sources import get_source, load_sources
from plex_etl.warehouse.base import Warehouse
from plex_etl.warehouse.local import LocalWarehouse
from plex_etl_tests.replication import build_defs, materialize
from plex_etl_tests.test_schema_evolution import SOURCE, Scratch, execute, scratch_source, write_sources

REPO = Path(__file__).resolve().parents[1]
TODAY = dt.datetime.now(dt.UTC).date()  # the scratch source's time zone is UTC
FIRST_DAY = TODAY - dt.timedelta(days=10)
OLD = TODAY - dt.timedelta(days=7)  # outside the lookback (3 days): a difference there is an ERROR
KINDS, NOKEY, HARD_VALUES = f"{SOURCE}/kinds", f"{SOURCE}/nokey", f"{SOURCE}/hard"

SCHEMA = (
    "CREATE TABLE kinds (id INT PRIMARY KEY, created DATE NOT NULL, i INT NULL, u BIGINT UNSIGNED NULL, "
    "dsm DECIMAL(15,4) NULL, dwide DECIMAL(65,0) NULL, f FLOAT NULL, d DOUBLE NULL, dt DATE NULL, "
    "dtm DATETIME(6) NULL, ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(2) NULL, "
    "txt VARCHAR(40) CHARACTER SET utf8mb4 NULL, lat VARCHAR(40) CHARACTER SET latin1 NULL, js JSON NULL, "
    "bt BIT(10) NULL, en ENUM('a','b','c') NULL, st SET('x','y','z') NULL, bl BLOB NULL, bn BINARY(4) NULL, "
    "zd DATE NULL, flag TINYINT(1) NULL, ds DOUBLE NULL, y YEAR NULL)",
    "CREATE TABLE nokey (created DATE NOT NULL, what VARCHAR(20), amount DECIMAL(10,2))",
    # Values whose canonical text is easy to get wrong; never edited: they must compare equal.
    "CREATE TABLE hard (id INT PRIMARY KEY, created DATE NOT NULL, d DOUBLE, f FLOAT, dsm DECIMAL(15,4), "
    "u BIGINT UNSIGNED, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, dt DATE, tm TIME(6), "
    "txt VARCHAR(20) CHARACTER SET utf8mb4, lat VARCHAR(20) CHARACTER SET latin1, bl BLOB)",
)
HARD = (  # d, f, dsm, u, dtm, ts, dt, tm, txt, lat, bl
    ("0e0", "0", "0", "0", "'0001-01-01 00:00:00'", "'1970-01-01 00:00:01'", "'0001-01-01'", "'-838:59:59'",
     "''", "''", "''"),
    ("-0e0", "-1.5", "-0.0001", "1", "'9999-12-31 23:59:59.999999'", "'2038-01-19 03:14:07.999999'",
     "'9999-12-31'", "'838:59:59'", "'a|b'", "'|'", "0x00"),
    ("1e0", "16777216", "99999999999.9999", "9223372036854775808", "'1969-12-31 23:59:59.999999'",
     "'2000-02-29 12:00:00.000001'", "'1969-12-31'", "'00:00:00.000001'", "'😀 ñ'", "'ñ|'", "NULL"),
    ("2e0", "3.4028235e38", "0.5", "NULL", "NULL", "NULL", "NULL", "'-00:00:00.5'", "'|'", "'a'", "0xFF00"),
    ("0.5e0", "1e-45", "-62102.5", "18446744073709551615", "'2020-02-29 00:00:00'", "NULL", "'2020-02-29'",
     "NULL", "NULL", "NULL", "''"),
    ("4e0/3", "0.1", "12.3400", "2", "'2020-01-01 00:00:00'", "NULL", "'2020-01-01'", "'24:00:00'", "'12'",
     "'12'", "0x31"),
    ("0.1e0+0.2e0", "NULL", "NULL", "3", "'2020-01-01 10:00:00'", "NULL", "NULL", "'100:00:00'", "'1|2'", "'1'",
     "0x7C"),
    ("1.7976931348623157e308", "-3.4028235e38", "1", "4", "NULL", "NULL", "NULL", "NULL", "'2'", "NULL", "NULL"),
    ("5e-324", "1.17549435e-38", "10", "5", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("2.2250738585072014e-308", "1", "100.0100", "6", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("-1e-300", "2", "0.0001", "7", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("9007199254740993e0", "0.5", "-1", "8", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("3.9999999999999996e0", "3.999999", "2.5000", "9", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("1.4142271248762572e0", "1.4142271", "3", "10", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("-123456789.123e0", "123456.79", "4", "11", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
    ("NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"),
)
WIDE = "1" * 65  # DECIMAL(65,0): 65 digits, beyond BIGNUMERIC (a STRING in both warehouses)
ROWS = 26  # ids 1..ROWS on OLD; 100 yesterday (inside the lookback)


def row(id_: int, created: dt.date) -> str:
    double = "0.3" if id_ == 7 else "5.99"
    zero_date = "'2021-01-01'" if id_ == 25 else "'0000-00-00'"
    return (f"({id_}, '{created}', {100 + id_}, 18446744073709551615, 62102.0000, {WIDE}, 1.5, {double}, "
            "'2020-01-01', '2020-01-01 10:00:00.123456', '2020-01-01 10:00:00.123', '100:00:00.50', 'ñandú', "
            f"'año', '{{\"a\": 1}}', b'101', 'a', 'x,y', 0x0102, 0x01020304, {zero_date}, 0, 1.5, 2020)")


DATA = (
    "DELETE FROM kinds", "DELETE FROM nokey",
    # Zero dates are stored only where the session's mode allows them (legacy schemas).
    "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
    "INSERT INTO kinds VALUES " + ", ".join([*(row(i, OLD) for i in range(1, ROWS + 1)),
                                            row(100, TODAY - dt.timedelta(days=1))]),
    f"INSERT INTO nokey VALUES ('{OLD}', 'sale', 10.00), ('{OLD}', 'sale', 10.00), "
    f"('{TODAY - dt.timedelta(days=1)}', 'refund', -3.50)",
    "DELETE FROM hard", "SET SESSION time_zone = '+00:00'",
    "INSERT INTO hard VALUES " + ", ".join(f"({i}, '{OLD}', {', '.join(v)})" for i, v in enumerate(HARD, start=1)),
)
PLAN = f"""\
defaults:
  first_day: {FIRST_DAY}
  lookback_days: 3
tables:
  kinds:
    strategy: event
    date_columns: [created]
    tier: standard
    type_overrides: {{js: json, flag: bool, ds: string}}
  nokey: {{strategy: event, date_columns: [created], tier: standard}}
  hard: {{strategy: event, date_columns: [created], tier: standard}}
"""


@dataclass(frozen=True)
class Edit:
    id: int
    column: str
    sql: str  # the SET clause
    mysql: str  # both values as reconciliation shows them
    warehouse: str


EDITS = (
    Edit(1, "i", "i = i + 1", "102", "101"),
    Edit(2, "u", "u = u - 1", "18446744073709551614", "18446744073709551615"),
    Edit(3, "dsm", "dsm = dsm + 1", "62103", "62102"),
    Edit(4, "dwide", "dwide = dwide + 1", "1111...112", "'1111...111'"),
    Edit(5, "f", "f = 1.25", "1.25", "1.5"),
    Edit(6, "d", "d = 88.88", "88.88", "5.99"),
    Edit(7, "d", "d = 0.1e0 + 0.2e0", "0.30000000000000004", "0.3"),  # one bit apart
    Edit(8, "dt", "dt = dt + INTERVAL 1 DAY", "2020-01-02", "2020-01-01"),
    Edit(9, "dtm", "dtm = dtm + INTERVAL 1 MICROSECOND", "2020-01-01 10:00:00.123457", "2020-01-01 10:00:00.123456"),
    Edit(10, "ts", "ts = ts + INTERVAL 1000 MICROSECOND", "2020-01-01 10:00:00.124", "2020-01-01 10:00:00.123"),
    Edit(11, "tm", "tm = '100:00:00.51'", "'100:00:00.51'", "'100:00:00.50'"),
    Edit(12, "txt", "txt = 'ñandu'", "'ñandu'", "'ñandú'"),
    Edit(13, "lat", "lat = 'ano'", "'ano'", "'año'"),
    Edit(14, "js", "js = '{\"a\": 2}'", "'{\"a\": 2}'", "'{\"a\": 1}'"),
    Edit(15, "js", "js = NULL", "NULL", "'{"),  # BigQuery shows its own encoding
    Edit(16, "bt", "bt = b'110'", "6", "5"),
    Edit(17, "en", "en = 'b'", "'b'", "'a'"),
    Edit(18, "st", "st = 'x,z'", "'x,z'", "'x,y'"),
    Edit(19, "bl", "bl = 0x0103", "0x0103", "0x0102"),
    Edit(20, "bn", "bn = 0x01020305", "0x01020305", "0x01020304"),
    Edit(21, "zd", "zd = '2021-05-05'", "2021-05-05", "NULL"),  # loaded NULL (zero date), now a date
    Edit(22, "flag", "flag = 1", "1", "0"),
    Edit(23, "ds", "ds = 2.5", "'2.5'", "'1.5'"),
    Edit(24, "y", "y = 2021", "2021", "2020"),
    Edit(25, "zd", "zd = '0000-00-00'", "'0000-00-00'", "2021-01-01"),  # a date, now a zero date
)


def shows(shown: str, expected: str) -> bool:
    """`shown` starts as `expected` does ('...' in `expected`: and ends as its end)."""
    head, _, tail = expected.partition("...")
    return shown.startswith(head) and shown.endswith(tail)


def build_kinds(config: Path) -> Scratch:
    """The scratch database and its configuration in `config` (catalog discovered, plan written);
    conftest.py's session fixture `kinds` builds it once for both warehouses' tests."""
    server = get_source("plex")
    database = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_values_kinds"
    scratch = Scratch(server, database, config)
    scratch.drop()
    execute(server, "information_schema", f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    scratch.execute(*SCHEMA)
    write_sources(scratch.config, server, database)
    run_discover(load_sources(scratch.config / "sources.yaml")[SOURCE], directory=scratch.config,
                 log=lambda _line: None)
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(PLAN)
    return scratch


def reconcile_all(warehouse: Warehouse, dataset: str) -> tuple[dict[str, TableReconciliation], dict[str, int]]:
    """Both tables reconciled; also the statements MySQL ran for each."""
    catalog, plan = load_source_catalog(SOURCE)
    source = load_sources()[SOURCE]
    results, statements = {}, {}
    with connect(source) as connection:
        for table in ("kinds", "nokey", "hard"):
            ran: list[str] = []

            def count(*args, ran=ran) -> None:
                ran.append(args[2])

            sa.event.listen(connection, "before_cursor_execute", count)
            results[table] = reconcile_table(connection, warehouse, replicated_table(catalog, plan, table, dataset),
                                             TODAY)
            sa.event.remove(connection, "before_cursor_execute", count)
            statements[table] = len(ran)
    return results, statements


def run_reconciliation(defs: dg.Definitions) -> dict[str, tuple[bool, dg.AssetCheckSeverity, dict]]:
    job = defs.resolve_job_def(f"{SOURCE}_reconciliation")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    return {
        e.asset_key.to_user_string(): (e.passed, e.severity, e.metadata)
        for e in result.get_asset_check_evaluations() if e.check_name == RECONCILE_CHECK
    }


def scenario_value_edits(warehouse: Warehouse, dataset: str, kinds: Scratch, repair) -> None:
    """The environment selects `warehouse`'s kind, `dataset` and the scratch configuration.
    `repair(defs)` reloads the partitions reconciliation names, as the warehouse's test chooses."""
    kinds.execute(*DATA)
    defs = build_defs(request_timeout_seconds=30)
    assert materialize(defs, [KINDS, NOKEY, HARD_VALUES], FIRST_DAY, TODAY).success

    # Every family compares equal as loaded (zero dates were fixed to NULL on both sides), and
    # MySQL answered each table with one statement: counts, key and value hashes in one pass.
    results, statements = reconcile_all(warehouse, dataset)
    assert all(r.equal for r in results.values()), "\n".join(r.describe() for r in results.values())
    assert statements == {"kinds": 1, "nokey": 1, "hard": 1}
    assert results["kinds"].mysql_rows == ROWS + 1 and results["nokey"].mysql_rows == 3
    weak = ("js",) if warehouse.kind == "bigquery" else ()
    assert results["kinds"].weak_columns == weak

    # One value of each family changes in MySQL in an old row (and one row of the table without key).
    kinds.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",
                  *(f"UPDATE kinds SET {e.sql} WHERE id = {e.id}" for e in EDITS),
                  "UPDATE nokey SET amount = 11.00 WHERE what = 'sale' LIMIT 1")
    results, _ = reconcile_all(warehouse, dataset)
    found = results["kinds"]
    assert [d.day for d in found.differences] == [OLD] and found.partitions_to_reload(TODAY) == [OLD]
    assert not found.missing_keys and not found.extra_keys
    named = {(v.key, v.column): v for v in found.changed_values}
    expected = [e for e in EDITS if not (e.column in weak and e.mysql != "NULL")]
    for edit in expected:
        value = named.get((f"id={edit.id}", edit.column))
        assert value is not None, f"{edit} not found in:\n{found.describe()}"
        assert value.day == OLD
        assert shows(value.mysql, edit.mysql) and shows(value.warehouse, edit.warehouse), (edit, value)
    assert len(named) == len(expected), sorted(named)  # no other column differs
    assert "values differ, e.g. id=1 (" in found.describe()
    nokey = results["nokey"]
    assert not nokey.keys_compared and [d.day for d in nokey.differences] == [OLD]
    assert "same count, different rows" in nokey.describe()  # a multiset: one row's hash changed

    # A table too large to hash every value daily rotates through its days, and says so: the edited
    # day's values are compared on 1 day in 7, the recent days always; counts and keys on every day.
    catalog, plan = load_source_catalog(SOURCE)
    spec = replicated_table(catalog, plan, "kinds", dataset)
    spec = dataclasses.replace(spec, table=dataclasses.replace(spec.table, row_estimate=70_000_000))
    large = dataclasses.replace(plan, value_check_rows=10_000_000)
    with connect(load_sources()[SOURCE]) as connection:
        for day, differs in ((OLD, True), (OLD + dt.timedelta(days=3), False)):
            coverage = value_coverage(large, spec, day)
            assert coverage.cycle == 7 and coverage.recent == day - dt.timedelta(days=2)
            rotated = reconcile_table(connection, warehouse, spec, TODAY, coverage)
            assert rotated.equal != differs and "values on 1 day in 7" in rotated.describe()

    # The daily check is red (ERROR: the day is older than the lookback), naming what differs.
    checks = run_reconciliation(defs)
    for key in (KINDS, NOKEY):
        passed, severity, metadata = checks[key]
        assert (passed, severity) == (False, dg.AssetCheckSeverity.ERROR)
        assert metadata["partitions_to_reload"].value == str(OLD)
    assert "dsm: MySQL 62103" in checks[KINDS][2]["value_differences"].value

    assert checks[HARD_VALUES][:2] == (True, dg.AssetCheckSeverity.ERROR)

    # Reloading the day the check names repairs every value.
    repair(defs)
    results, _ = reconcile_all(warehouse, dataset)
    assert all(r.equal for r in results.values()), "\n".join(r.describe() for r in results.values())
    assert all(passed for passed, *_ in run_reconciliation(defs).values())


def plex_etl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`plex-etl ARGS` in a subprocess, as an operator runs it (this checkout's code)."""
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "plex_etl.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LocalWarehouse:
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "local")
    monkeypatch.setenv("PLEX_ETL_LOCAL_WAREHOUSE", str(path))
    monkeypatch.setenv("PLEX_ETL_DATASET", "values_local")
    monkeypatch.delenv("PLEX_ETL_GCP_PROJECT", raising=False)
    return LocalWarehouse(path)


def test_every_value_edit_is_found_and_repaired_on_the_local_warehouse(local_env, kinds, monkeypatch, tmp_path):
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(kinds.config))

    def repair(_defs: dg.Definitions) -> None:
        # The operator's command: names the values, reloads exactly the day, compares again.
        done = plex_etl("reconcile", "--source", SOURCE, "--repair", home=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"--partition {OLD}" in done.stdout and done.stdout.count("after repair:") == 2
        assert "i: MySQL 102, warehouse 101" in done.stdout
        assert "Traceback" not in done.stderr

    scenario_value_edits(local_env, "values_local", kinds, repair)
    # On BigQuery: test_replication_bigquery.py::test_every_value_edit_is_found_and_repaired_on_bigquery


# ---------------------------------------------------------------------------------------
# Honest commands: an empty comparison is an error naming why; a failing table is named.


def test_comparing_a_source_whose_tables_await_review_is_an_error_naming_them(local_env, kinds, monkeypatch,
                                                                               tmp_path, capsys):
    config = tmp_path / "config"
    config.mkdir()
    for name in ("sources.yaml", f"{SOURCE}.catalog.yaml"):
        (config / name).write_text((kinds.config / name).read_text())
    (config / f"{SOURCE}.plan.yaml").write_text(PLAN.replace("    tier: standard\n", "    tier: standard\n"
                                                                                    "    proposed: true\n")
                                                .replace("tier: standard}", "tier: standard, proposed: true}"))
    monkeypatch.setenv("PLEX_ETL_CONFIG_DIR", str(config))
    monkeypatch.delenv("PLEX_ETL_DEBUG", raising=False)
    why = (f"nothing to compare: {SOURCE}: its 3 table(s) await review (hard, kinds, nokey); accept one by deleting "
           f"its `proposed: true` line in {config / f'{SOURCE}.plan.yaml'}")
    done = plex_etl("compare", "--source", SOURCE, home=tmp_path)  # it used to end in a traceback
    assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", f"plex-etl compare: error: {why}")
    assert main(["reconcile", "--source", SOURCE]) == 2  # it used to print nothing and exit 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err.strip()) == ("", f"plex-etl reconcile: error: {why}")
    (config / f"{SOURCE}.catalog.yaml").unlink()
    assert main(["reconcile"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"plex-etl reconcile: error: nothing to compare: {SOURCE} has no catalog yet (run `plex-etl discover "
        f"--source {SOURCE}`, review {config / f'{SOURCE}.plan.yaml'})")


def test_a_table_that_cannot_be_compared_is_named_and_the_others_still_are(local_env, monkeypatch, tmp_path,
                                                                            capsys):
    scratch = scratch_source(monkeypatch, tmp_path, "values_renamed",
                             "CREATE TABLE a (id INT PRIMARY KEY, created DATE NOT NULL)",
                             "CREATE TABLE b (id INT PRIMARY KEY, created DATE NOT NULL)",
                             f"INSERT INTO a VALUES (1, '{OLD}')", f"INSERT INTO b VALUES (1, '{OLD}')")
    (scratch.config / f"{SOURCE}.plan.yaml").write_text(
        f"defaults: {{first_day: {FIRST_DAY}}}\ntables:\n"
        "  a: {strategy: event, date_columns: [created], tier: standard}\n"
        "  b: {strategy: event, date_columns: [created], tier: standard}\n")
    assert materialize(build_defs(), [f"{SOURCE}/a", f"{SOURCE}/b"], FIRST_DAY, TODAY).success
    scratch.execute("RENAME TABLE a TO a_renamed")
    monkeypatch.delenv("PLEX_ETL_DEBUG", raising=False)
    missing = f"cannot compare: ProgrammingError: (1146, \"Table '{scratch.database}.a' doesn't exist\")"
    done = plex_etl("compare", "--source", SOURCE, home=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith(f"{SOURCE}.a") and lines[1].endswith(missing)
    assert lines[2].startswith(f"{SOURCE}.b") and lines[2].endswith("yes") and lines[3].endswith("NO")
    assert main(["reconcile", "--source", SOURCE]) == 1
    reconciled = capsys.readouterr().out.splitlines()
    assert reconciled[0].startswith(f"{SOURCE}.a: cannot compare: SchemaDriftError: ")  # the columns read first
    assert "MySQL table a no longer exists (renamed or dropped?)" in reconciled[0]
    assert reconciled[1:] == [f"{SOURCE}.b (event): MySQL 1 rows, warehouse 1: equal (counts, keys and values)"]
    assert main(["reconcile", "--source", SOURCE, "--table", "nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"plex-etl reconcile: error: nothing to compare: {SOURCE} has no included table named nope")
