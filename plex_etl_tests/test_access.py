"""Key-bounded reads (issue 12): the same rows and snapshot counts as today's query, while
MySQL examines about the window's rows instead of the whole dated table.

On every dated demo table and several windows (one day, a closed range, an open end, the
first partition), and on a scratch source whose keys are out of date order: late rows
(entered after their day), an undated row, a future-dated row, a table whose key does not
follow its date at all.
"""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest
import sqlalchemy as sa

from plex_etl.catalog.discover import read_structure
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.catalog.store import load_source_catalog
from plex_etl.extract.access import KEY_BOUNDS_ENV, choose_access, explain_partition, runner
from plex_etl.extract.spec import ReplicatedTable, replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.extract.stream import PartitionStream
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import Source, with_database

# The children whose one-day read scanned their whole dated parent (issue 12).
SCANNED_PARENTS = {"factcabecera", "factlineas", "asientos", "asientos_detalle", "reccabecera", "reclineas"}


@pytest.fixture(autouse=True)
def _key_bounds_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # On by default, but scratch plans and the environment may differ: these tests are about them.
    monkeypatch.setenv(KEY_BOUNDS_ENV, "on")


def ordered(table: pa.Table) -> list[str]:
    return sorted(repr(tuple(r.values())) for r in table.to_pylist())


def read_both(source: Source, spec: ReplicatedTable, start, end, monkeypatch) -> tuple:
    """(bounded stream, its rows, today's stream, its rows) for one window."""
    monkeypatch.setenv(KEY_BOUNDS_ENV, "on")
    bounded = PartitionStream(source, spec, start, end)
    bounded_rows = pa.Table.from_batches(list(bounded), bounded.schema)
    monkeypatch.setenv(KEY_BOUNDS_ENV, "off")
    today = PartitionStream(source, spec, start, end)
    today_rows = pa.Table.from_batches(list(today), today.schema)
    monkeypatch.setenv(KEY_BOUNDS_ENV, "on")
    return bounded, bounded_rows, today, today_rows


def assert_same(source, spec, start, end, monkeypatch) -> PartitionStream:
    bounded, rows, today, today_rows = read_both(source, spec, start, end, monkeypatch)
    assert today.access is not None and today.access.keys is None
    where = f"{spec.name} {start}..{end} ({bounded.access})"
    assert bounded.snapshot_counts == today.snapshot_counts, where
    assert ordered(rows) == ordered(today_rows), where
    assert bounded.expected_rows == rows.num_rows, where
    return bounded


@pytest.mark.parametrize("source_name", ["plex", "quantio"])
def test_bounded_reads_equal_todays_on_every_dated_demo_table(demo_sources, demo_end_date, source_name,
                                                              monkeypatch):
    source = demo_sources[source_name]
    catalog, plan = load_source_catalog(source_name)
    middle = demo_end_date - dt.timedelta(days=12)
    windows = [
        (middle, middle),  # one day
        (middle - dt.timedelta(days=3), middle - dt.timedelta(days=1)),  # closed range
        (demo_end_date - dt.timedelta(days=2), None),  # a tick: today's partition is open-ended
        (demo_end_date, None),
        (None, middle),  # the first partition (undated and older rows): no key bounds
        (demo_end_date - dt.timedelta(days=40), middle),  # from before the data's first day
    ]
    keyed = set()
    for table_plan in sorted(plan.included, key=lambda p: p.table):
        if table_plan.strategy == "snapshot":
            continue
        spec = replicated_table(catalog, plan, table_plan.table)
        for start, end in windows:
            bounded = assert_same(source, spec, start, end, monkeypatch)
            if bounded.access.keys is not None:
                keyed.add(spec.name)
            if start is None:
                assert bounded.access.keys is None
    if source_name == "plex":
        assert keyed >= SCANNED_PARENTS, SCANNED_PARENTS - keyed


def test_bounded_one_day_reads_examine_about_the_days_rows(demo_sources, demo_end_date):
    """Handler_read deltas of the rows query: at most 3x the rows returned (today: the whole parent)."""
    source = demo_sources["plex"]
    catalog, plan = load_source_catalog("plex")
    day = demo_end_date - dt.timedelta(days=12)
    with connect(source) as connection:
        run = runner(connection)

        def examined(sql: str) -> tuple[int, int]:
            before = sum(int(v) for _, v in run("SHOW SESSION STATUS LIKE 'Handler_read%'"))
            rows = len(run(sql))
            return rows, sum(int(v) for _, v in run("SHOW SESSION STATUS LIKE 'Handler_read%'")) - before

        for name in ("factcabecera", "factlineas", "asientos_detalle", "reclineas"):
            spec = replicated_table(catalog, plan, name)
            access = choose_access(run, spec, day, day)
            assert access.keys is not None, (name, access.reason)
            rows, reads = examined(partition_query(spec, day, day, access.keys).rows_sql)
            _, full = examined(partition_query(spec, day, day).rows_sql)
            assert rows > 0 and reads <= 3 * rows + 2, (name, rows, reads)
            assert full > 5 * reads, (name, full, reads)


# --- a scratch source whose keys are out of date order ------------------------------------

TODAY = dt.date.today()
FIRST_DAY = TODAY - dt.timedelta(days=40)
DAYS = 30


def day(offset: int) -> dt.date:
    return TODAY + dt.timedelta(days=offset)


@pytest.fixture
def scratch(demo_sources):
    base = demo_sources["quantio"]
    prefix = os.environ.get("PLEX_ETL_TEST_DB_PREFIX", "plexetl_test")
    source = with_database(base, f"{prefix}_access")
    engine = create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {source.database}"))
        connection.execute(sa.text(f"CREATE DATABASE {source.database}"))
        for ddl in (
            "CREATE TABLE inv (id INT AUTO_INCREMENT PRIMARY KEY, emision DATE NULL, total DECIMAL(10,2))",
            "CREATE TABLE inv_lines (inv_id INT NOT NULL, n INT NOT NULL, qty INT, PRIMARY KEY (inv_id, n), "
            "CONSTRAINT fk_lines_inv FOREIGN KEY (inv_id) REFERENCES inv (id))",
            # ids in no date order at all
            "CREATE TABLE shuffled (id INT PRIMARY KEY, fecha DATETIME NOT NULL)",
        ):
            connection.execute(sa.text(f"USE {source.database}"))
            connection.execute(sa.text(ddl))
        invoices = [(day(-DAYS + i // 20), (i % 7) + 1) for i in range(DAYS * 20)]  # 20 a day, in order
        connection.execute(sa.text("INSERT INTO inv (emision, total) VALUES (:d, :t)"),
                           [{"d": d, "t": t} for d, t in invoices])
        connection.execute(sa.text("INSERT INTO inv_lines SELECT id, n.n, n.n FROM inv, "
                                   "(SELECT 1 n UNION SELECT 2) n"))
        connection.execute(sa.text("INSERT INTO shuffled VALUES (:i, :f)"),
                           [{"i": i, "f": dt.datetime.combine(day(-((i * 7919) % DAYS)), dt.time(10))}
                            for i in range(1, 400)])
    with connect(source) as connection:
        catalog = read_structure(connection, "lab", source.database)
    plan = SourcePlan("lab", {
        "inv": TablePlan("inv", strategy="event", date_columns=("emision",)),
        "inv_lines": TablePlan("inv_lines", strategy="child", parent="fk_lines_inv"),
        "shuffled": TablePlan("shuffled", strategy="event", date_columns=("fecha",)),
    }, first_day=FIRST_DAY)
    yield source, catalog, plan, engine
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {source.database}"))
    engine.dispose()


def insert(engine, database: str, *dates: dt.date | None) -> None:
    """New invoices (the next auto-increment ids, so after every existing row) with two lines."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"USE {database}"))
        for d in dates:
            new = connection.execute(sa.text("INSERT INTO inv (emision, total) VALUES (:d, 1)"), {"d": d})
            connection.execute(sa.text("INSERT INTO inv_lines VALUES (:i, 1, 1), (:i, 2, 2)"),
                               {"i": new.lastrowid})


def windows() -> list[tuple[dt.date | None, dt.date | None]]:
    one_days = [(day(-o), day(-o)) for o in range(DAYS + 1)]
    return [*one_days, (day(-2), None), (day(0), None), (day(-10), day(-5)), (None, day(-20)), (None, None),
            (day(-40), day(-25))]


def test_late_undated_and_future_rows_read_exactly(scratch, monkeypatch):
    source, catalog, plan, engine = scratch
    # Entered now, after yesterday's rows (the newest): a day late, undated, a day late, a month ahead
    # (the sample of the newest keys sees how far back they step).
    insert(engine, source.database, day(-2), None, day(-2), day(30))
    for name in ("inv", "inv_lines"):
        spec = replicated_table(catalog, plan, name)
        for start, end in windows():
            assert_same(source, spec, start, end, monkeypatch)
    spec = replicated_table(catalog, plan, "inv")
    with connect(source) as connection:
        access = choose_access(runner(connection), spec, day(-12), day(-12))
    assert access.keys is not None and access.keys.margin_days == 1, access  # widened by the late rows
    assert "within 1 day(s)" in access.reason

    insert(engine, source.database, day(-15))  # after the future one: 45 days back, > MAX_DISORDER_DAYS
    for start, end in [(day(-15), day(-15)), (day(-16), day(-14)), (day(-15), None)]:
        bounded = assert_same(source, spec, start, end, monkeypatch)
        assert bounded.access.keys is None and "does not follow the date" in bounded.access.reason


def test_a_key_that_does_not_follow_the_date_falls_back(scratch, monkeypatch):
    source, catalog, plan, _ = scratch
    spec = replicated_table(catalog, plan, "shuffled")
    for start, end in windows():
        bounded = assert_same(source, spec, start, end, monkeypatch)
        assert bounded.access.keys is None


def test_rows_entered_late_and_no_longer_newest_come_by_their_new_keys(scratch, monkeypatch):
    """A back-dated row that is no longer among the newest keys, and that the sample misses, is
    outside the key range of a closed window of its day. The read also takes every row whose
    own key is above the warehouse's largest (the key before the inserts, here): it comes with
    the next read, whatever window that reads, and keeps its own day."""
    source, catalog, plan, engine = scratch
    spec = replicated_table(catalog, plan, "inv")
    with connect(source) as connection:
        ((high_water,),) = runner(connection)("SELECT MAX(id) FROM inv")
    insert(engine, source.database, day(-20))
    insert(engine, source.database, *[day(0)] * 300)  # pushes it out of the newest keys
    bounded, _, today, _ = read_both(source, spec, day(-20), day(-20), monkeypatch)
    assert bounded.access.keys is not None
    assert today.snapshot_counts[day(-20)] == bounded.snapshot_counts[day(-20)] + 1  # the limit, without new keys
    tick = PartitionStream(source, spec, day(-2), None, new_keys_above=int(high_water))
    tick_rows = pa.Table.from_batches(list(tick), tick.schema)
    assert tick.access.keys is not None
    assert tick.snapshot_counts[day(-20)] == 1  # the late row, with its own day
    assert tick.snapshot_counts[day(0)] == today_counts(source, spec, day(0))
    late = [r for r in tick_rows.to_pylist() if r["_etl_partition_date"] == day(-20)]
    assert len(late) == 1 and late[0]["id"] > high_water
    assert tick.merges_outside_range and tick_rows.num_rows == tick.expected_rows


def today_counts(source: Source, spec: ReplicatedTable, on: dt.date) -> int:
    with connect(source) as connection:
        return sum(int(n) for _, n in connection.execute(sa.text(partition_query(spec, on, on).count_sql)))


def test_explain_reports_the_access_path(scratch):
    source, catalog, plan, _ = scratch
    with connect(source) as connection:
        run = runner(connection)
        lines = explain_partition(run, replicated_table(catalog, plan, "inv_lines"), day(-5))
        shuffled = explain_partition(run, replicated_table(catalog, plan, "shuffled"), day(-5))
    assert lines.keyed and not lines.full_scans, lines
    assert lines.today_full_scans == ["inv"]
    assert "CREATE INDEX" in lines.index_statement and "`inv` (`emision`)" in lines.index_statement
    assert not shuffled.keyed and shuffled.full_scans == ["shuffled"]
    assert shuffled.index_statement == "CREATE INDEX `ix_shuffled_fecha` ON `shuffled` (`fecha`);"


def test_explain_command_and_catalog_section(demo_sources, demo_end_date, monkeypatch, capsys):
    from plex_etl.catalog.report import catalog_markdown
    from plex_etl.cli import main

    monkeypatch.setenv("PLEX_MYSQL_DATABASE", demo_sources["plex"].database)
    day = demo_end_date - dt.timedelta(days=3)
    assert main(["explain", "--source", "plex", "--day", day.isoformat(), "--table", "factlineas",
                 "--table", "apppedidos"]) == 0
    out = capsys.readouterr().out
    assert "## Access paths" in out and f"({day})" in out
    assert "| factlineas | child | key range: factcabecera: range on PRIMARY" in out
    assert "| apppedidos | upsert | full scan of apppedidos |" in out
    assert "CREATE INDEX `ix_factcabecera_emision` ON `factcabecera` (`Emision`);" in out
    catalog, plan = load_source_catalog("plex")
    assert "\n## Access paths\n" in catalog_markdown(catalog, plan, out)


def test_key_bounds_are_on_unless_a_plan_says_otherwise(monkeypatch):
    """Bounded reads by default; `key_bounds: false` (source default or per table) turns them off."""
    from dataclasses import replace

    monkeypatch.delenv(KEY_BOUNDS_ENV)
    catalog, plan = load_source_catalog("plex")
    assert plan.key_bounds and replicated_table(catalog, plan, "factcabecera").key_bounds
    assert not replicated_table(catalog, replace(plan, key_bounds=False), "factcabecera").key_bounds
    tables = {**plan.tables, "factlineas": replace(plan.tables["factlineas"], key_bounds=False)}
    assert not replicated_table(catalog, replace(plan, tables=tables), "factlineas").key_bounds
    assert replicated_table(catalog, replace(plan, tables=tables), "factcabecera").key_bounds
    off = choose_access(lambda _sql: [], replicated_table(catalog, replace(plan, key_bounds=False), "factcabecera"),
                        dt.date(2026, 11, 1), dt.date(2026, 11, 1))
    assert off.keys is None and "key bounds off" in off.reason
