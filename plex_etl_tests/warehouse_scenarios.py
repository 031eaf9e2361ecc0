"""Warehouse behaviour scenarios, run by test_warehouse_local.py and
test_warehouse_bigquery.py against their warehouse (same assertions for both).

Each scenario takes a `Harness`: the warehouse, a fresh dataset, and the few things that
differ between warehouses (how to list leftover staging, what the emulator cannot do).
Table references are written `dataset.table`, valid in both DuckDB and BigQuery SQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from plex_etl.warehouse.base import (
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    TargetTable,
    Warehouse,
    WarehouseColumn,
    WarehouseError,
)

if TYPE_CHECKING:
    from plex_etl.typemap import MappedType

D1, D2, D3, D4 = (dt.date(2025, 3, d) for d in (1, 2, 3, 4))
UTC = dt.UTC


@dataclass
class Harness:
    wh: Warehouse
    dataset: str
    # names of staging tables/files left behind in the dataset (must be empty after loads)
    staging_leftovers: Callable[[], list[str]]
    # Arrow type and value for the BIGNUMERIC(50, 10) column of the types scenario
    bignumeric_arrow: pa.DataType = field(default_factory=lambda: pa.decimal256(50, 10))
    bignumeric_value: Decimal = Decimal("1234567890123456789012345678901234567890.0123456789")

    def type_of(self, column: WarehouseColumn) -> str:
        """The type columns() should report for `column`."""
        if self.wh.kind == "bigquery":
            return column.bigquery_type
        return column.local_type

    def canonical(self, type_name: str) -> str:
        """One spelling per type: the warehouse's own normaliser."""
        return self.wh.normalize_type(type_name)

    def rows(self, table: str, *, loaded_at: bool = False) -> list[dict[str, Any]]:
        """All rows of `table`, sorted; without _etl_loaded_at unless asked."""
        got = self.wh.query(f"SELECT * FROM {self.dataset}.{table}").to_pylist()
        if not loaded_at:
            for r in got:
                r.pop(LOADED_AT_COLUMN, None)
        return sorted(got, key=lambda r: [(v is None, repr(v)) for v in r.values()])


# ---------------------------------------------------------------------- table builders
ID = WarehouseColumn("id", pa.int64(), "INT64", "BIGINT", nullable=False)
NAME = WarehouseColumn("name", pa.string(), "STRING", "VARCHAR")
STORE = WarehouseColumn("store_id", pa.int32(), "INT64", "BIGINT", nullable=False)
ITEM = WarehouseColumn("item_id", pa.string(), "STRING", "VARCHAR", nullable=False)
QTY = WarehouseColumn("qty", pa.decimal128(15, 4), "NUMERIC(15, 4)", "DECIMAL(15,4)")
EMAIL = WarehouseColumn("email", pa.string(), "STRING", "VARCHAR")


def simple_target(h: Harness, name: str, *extra: WarehouseColumn) -> TargetTable:
    return TargetTable(h.dataset, name, (ID, NAME, *extra), ("id",), f"test table {name}")


def batch(target: TargetTable, day: dt.date, rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{**r, PARTITION_COLUMN: day} for r in rows], schema=target.arrow_schema
    )


def people(ids: Sequence[int], suffix: str = "") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"name {i}{suffix}"} for i in ids]


def expected(day: dt.date, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, PARTITION_COLUMN: day} for r in rows]


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: [(v is None, repr(v)) for v in r.values()])


def three_partitions(h: Harness, table: str) -> TargetTable:
    """Create `table` with ids 1-3 on D1, 4-5 on D2, 6 on D3 (one load, 4 chunks)."""
    t = simple_target(h, table)
    h.wh.load(
        t, [batch(t, D1, people([1, 2])), batch(t, D1, people([3])),
            batch(t, D2, people([4, 5])), batch(t, D3, people([6]))],
        D1, D3,
    )
    return t


# ---------------------------------------------------------------------- scenarios
def scenario_create_and_reload(h: Harness) -> None:
    t = simple_target(h, "orders")
    assert h.wh.columns(h.dataset, "orders") is None
    mixed = pa.RecordBatch.from_pylist(
        [{"id": 4, "name": "name 4", PARTITION_COLUMN: D2},
         {"id": 6, "name": "name 6", PARTITION_COLUMN: D3}],
        schema=t.arrow_schema,
    )
    result = h.wh.load(
        t, [batch(t, D1, people([1, 2, 3])), mixed, batch(t, D2, people([5])),
            batch(t, D2, [])],  # an empty batch is skipped
        D1, D3,
    )
    assert (result.rows, result.chunks) == (6, 3)
    assert dict(result.rows_by_partition) == {D1: 3, D2: 2, D3: 1}
    assert result.bytes > 0 and result.seconds > 0 and result.added_columns == ()
    cols = h.wh.columns(h.dataset, "orders")
    assert cols is not None
    assert list(cols) == ["id", "name", PARTITION_COLUMN, LOADED_AT_COLUMN]
    assert cols["id"] == h.type_of(ID) and cols["name"] == h.type_of(NAME)
    assert h.wh.count_by_partition(h.dataset, "orders", D1, D4) == {D1: 3, D2: 2, D3: 1}
    before = h.rows("orders", loaded_at=True)
    assert all(r[LOADED_AT_COLUMN] is not None for r in before)

    # Reloading D2 replaces only D2: no duplicates, D1 and D3 untouched (same loaded_at).
    result = h.wh.load(t, [batch(t, D2, people([4, 7], " v2"))], D2, D2)
    assert (result.rows, dict(result.rows_by_partition)) == (2, {D2: 2})
    after = h.rows("orders", loaded_at=True)
    assert [r for r in after if r[PARTITION_COLUMN] != D2] == [
        r for r in before if r[PARTITION_COLUMN] != D2
    ]
    assert sort_rows([
        {k: v for k, v in r.items() if k != LOADED_AT_COLUMN}
        for r in after if r[PARTITION_COLUMN] == D2
    ]) == expected(D2, people([4, 7], " v2"))
    ids = [r["id"] for r in after]
    assert sorted(ids) == [1, 2, 3, 4, 6, 7]

    # Running the same partition again gives the same rows, never duplicates.
    h.wh.load(t, [batch(t, D2, people([4, 7], " v2"))], D2, D2)
    assert h.rows("orders") == [
        {k: v for k, v in r.items() if k != LOADED_AT_COLUMN} for r in after
    ]

    # An empty stream for a partition empties it (the source has no rows for that day).
    result = h.wh.load(t, iter(()), D3, D3)
    assert (result.rows, result.chunks, result.bytes) == (0, 0, 0)
    assert h.wh.count_by_partition(h.dataset, "orders", D1, D4) == {D1: 3, D2: 2}
    assert h.staging_leftovers() == []


def scenario_upsert(h: Harness) -> None:
    # Single key: a key staged again moves to its new partition; a key staged twice in
    # one load lands once (the row of the latest partition).
    t = simple_target(h, "customers")
    h.wh.load(t, [batch(t, D1, people([1, 2, 3])), batch(t, D2, people([4]))], D1, D2, "upsert")
    h.wh.load(
        t, [batch(t, D3, people([2, 5], " new")), batch(t, D4, people([5], " newest"))],
        D3, D4, "upsert",
    )
    got = h.rows("customers")
    assert got == sort_rows(
        expected(D1, people([1, 3])) + expected(D2, people([4]))
        + expected(D3, people([2], " new")) + expected(D4, people([5], " newest"))
    )
    # Upserting the same again changes nothing.
    h.wh.load(t, [batch(t, D3, people([2], " new")), batch(t, D4, people([5], " newest"))],
              D3, D4, "upsert")
    assert h.rows("customers") == got

    # Composite key (store_id, item_id): only rows matching the whole key move.
    s = TargetTable(h.dataset, "stock", (STORE, ITEM, QTY), ("store_id", "item_id"))

    def stock(rows: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
        return [{"store_id": a, "item_id": b, "qty": Decimal(q)} for a, b, q in rows]

    first = stock([(1, "A", "1.5"), (1, "B", "2.0000"), (2, "A", "3.25")])
    h.wh.load(s, [batch(s, D1, first)], D1, D1, "upsert")
    second = stock([(1, "B", "9.9999"), (2, "B", "4")])  # (1, B) moves; (2, B) is new
    h.wh.load(s, [batch(s, D2, second)], D2, D2, "upsert")
    got = h.rows("stock")
    assert got == sort_rows(
        expected(D1, stock([(1, "A", "1.5"), (2, "A", "3.25")])) + expected(D2, second)
    )
    keys = [(r["store_id"], r["item_id"]) for r in got]
    assert len(keys) == len(set(keys))

    with pytest.raises(WarehouseError, match="primary key"):
        h.wh.load(TargetTable(h.dataset, "nokey", (NAME,)), iter(()), D1, D1, "upsert")
    assert h.staging_leftovers() == []


def failing_after(
    target: TargetTable, batches: Sequence[pa.RecordBatch], k: int
) -> Iterator[pa.RecordBatch]:
    """Yields the first k batches, then raises (an extraction dying mid-stream)."""
    yield from batches[:k]
    raise RuntimeError(f"injected failure after chunk {k}")


def scenario_failure_mid_stream(h: Harness) -> None:
    t = three_partitions(h, "events")
    before = h.rows("events", loaded_at=True)
    batches = [batch(t, D1, people([10, 11])), batch(t, D2, people([12])),
               batch(t, D3, people([13, 14]))]
    for k in (1, 2, len(batches)):  # first, middle, last chunk
        with pytest.raises(RuntimeError, match=f"after chunk {k}"):
            h.wh.load(t, failing_after(t, batches, k), D1, D3)
        assert h.rows("events", loaded_at=True) == before, f"target changed (k={k})"
        assert h.staging_leftovers() == [], f"staging left behind (k={k})"
    # A failure while the table does not exist yet does not create it.
    n = simple_target(h, "never")
    with pytest.raises(RuntimeError):
        h.wh.load(n, failing_after(n, [batch(n, D1, people([1]))], 1), D1, D1)
    assert h.wh.columns(h.dataset, "never") is None
    assert h.staging_leftovers() == []


def scenario_schema_evolution(h: Harness) -> None:
    t = simple_target(h, "members")
    h.wh.load(t, [batch(t, D1, people([1, 2]))], D1, D1)
    t2 = simple_target(h, "members", EMAIL)
    rows2 = [{"id": 3, "name": "name 3", "email": "três@example.com"}]
    result = h.wh.load(t2, [batch(t2, D2, rows2)], D2, D2)
    assert result.added_columns == ("email",)
    cols = h.wh.columns(h.dataset, "members")
    assert cols is not None and "email" in cols and cols["email"] == h.type_of(EMAIL)
    assert h.rows("members") == sort_rows(
        expected(D1, [{**r, "email": None} for r in people([1, 2])]) + expected(D2, rows2)
    )
    # Loading with the new column again adds nothing.
    assert h.wh.load(t2, [batch(t2, D2, rows2)], D2, D2).added_columns == ()

    # A type change is not applied: the error names table, column, old and new type.
    before = h.rows("members", loaded_at=True)
    changed = WarehouseColumn("name", pa.int64(), "INT64", "BIGINT")
    t3 = TargetTable(h.dataset, "members", (ID, changed, EMAIL), ("id",))
    with pytest.raises(WarehouseError) as err:
        h.wh.load(t3, [batch(t3, D2, [{"id": 3, "name": 3, "email": None}])], D2, D2)
    msg = str(err.value)
    assert f"{h.dataset}.members" in msg and "name" in msg
    assert h.type_of(NAME) in msg and h.type_of(changed) in msg
    assert h.rows("members", loaded_at=True) == before
    assert h.staging_leftovers() == []


def scenario_retired_column_keeps_its_history(h: Harness) -> None:
    """A column the load no longer writes (dropped in MySQL) keeps, row by row, the value each
    replaced row had: reloading a day, moving a row to another day (upsert) or reloading a
    day's snapshot by key; new rows hold NULL; days not loaded are untouched."""
    t2 = simple_target(h, "members", EMAIL)  # created with the column, as before MySQL dropped it

    def mail(ids: Sequence[int], suffix: str = "") -> list[dict[str, Any]]:
        return [{**r, "email": f"{r['id']}@old"} for r in people(ids, suffix)]

    h.wh.load(t2, [batch(t2, D1, mail([1, 2])), batch(t2, D2, mail([3, 5]))], D1, D2, "upsert")
    t = simple_target(h, "members")
    # Day 1 reloaded: 1 changed, 2 the same, 4 new; 5 moved from day 2 to day 1.
    result = h.wh.load(t, [batch(t, D1, people([1], " v2") + people([2, 4, 5]))], D1, D1, "upsert")
    assert result.retired_columns == ("email",) and result.added_columns == ()
    assert h.rows("members") == sort_rows(
        expected(D1, [{**r, "email": "1@old"} for r in people([1], " v2")]
                 + [{**people([2])[0], "email": "2@old"}, {**people([4])[0], "email": None},
                    {**people([5])[0], "email": "5@old"}])
        + expected(D2, mail([3])))
    # Again: the carried values stay (they are the warehouse's history, not MySQL's).
    h.wh.load(t, [batch(t, D1, people([1], " v2") + people([2, 4, 5]))], D1, D1, "upsert")
    assert [r["email"] for r in h.rows("members") if r[PARTITION_COLUMN] == D1] == [
        "1@old", "2@old", None, "5@old"]
    # Replace by day (a snapshot with a key): each key of the day keeps its own value.
    h.wh.load(t, [batch(t, D2, people([3], " v3"))], D2, D2, "replace")
    assert [r for r in h.rows("members") if r[PARTITION_COLUMN] == D2] == expected(
        D2, [{**people([3], " v3")[0], "email": "3@old"}])
    # Without a primary key a replaced row has no successor: the reloaded day holds NULL there.
    k2 = TargetTable(h.dataset, "nokey", (ID, NAME, EMAIL))
    h.wh.load(k2, [batch(k2, D1, mail([1]))], D1, D1)
    k = TargetTable(h.dataset, "nokey", (ID, NAME))
    assert h.wh.load(k, [batch(k, D1, people([1]))], D1, D1).retired_columns == ("email",)
    assert h.rows("nokey") == expected(D1, [{**people([1])[0], "email": None}])
    assert h.staging_leftovers() == []


def scenario_partition_out_of_range(h: Harness) -> None:
    t = three_partitions(h, "visits")
    before = h.rows("visits", loaded_at=True)
    stray = batch(t, D3, people([99]))
    with pytest.raises(WarehouseError) as err:
        h.wh.load(t, [batch(t, D1, people([7])), stray], D1, D2)
    assert f"{h.dataset}.visits" in str(err.value) and str(D3) in str(err.value)
    assert h.rows("visits", loaded_at=True) == before
    assert h.staging_leftovers() == []


def type_columns(h: Harness) -> tuple[WarehouseColumn, ...]:
    return (
        ID,
        WarehouseColumn("u64", pa.decimal128(20, 0), "NUMERIC(20, 0)", "DECIMAL(20,0)"),
        WarehouseColumn("price", pa.decimal128(15, 4), "NUMERIC(15, 4)", "DECIMAL(15,4)"),
        WarehouseColumn("big", h.bignumeric_arrow, "BIGNUMERIC(50, 10)", "VARCHAR"),
        WarehouseColumn("ratio", pa.float64(), "FLOAT64", "DOUBLE"),
        WarehouseColumn("flag", pa.bool_(), "BOOL", "BOOLEAN"),
        WarehouseColumn("label", pa.string(), "STRING", "VARCHAR"),
        WarehouseColumn("raw", pa.binary(), "BYTES", "BLOB"),
        WarehouseColumn("day", pa.date32(), "DATE", "DATE"),
        WarehouseColumn("at_local", pa.timestamp("us"), "DATETIME", "TIMESTAMP"),
        WarehouseColumn("at_utc", pa.timestamp("us", tz="UTC"), "TIMESTAMP",
                        "TIMESTAMP WITH TIME ZONE"),
        WarehouseColumn("doc", pa.string(), "JSON", "JSON"),
    )


def typed_row(h: Harness) -> dict[str, Any]:
    """A row of `type_columns` with a demanding value in every column."""
    return {
        "id": 1,
        "u64": Decimal("18446744073709551615"),
        "price": Decimal("12345678901.2345"),
        "big": h.bignumeric_value,
        "ratio": 0.1 + 0.2,
        "flag": True,
        "label": "Apotheke Müller – crème brûlée 😀 \u00a0end, it's a \\ \"quote\"\n\t\x01",
        "raw": b"\x00\xff\x00binary\xfe",
        "day": dt.date(1999, 12, 31),
        "at_local": dt.datetime(2025, 3, 1, 23, 59, 59, 123456),
        "at_utc": dt.datetime(2025, 3, 1, 22, 0, 0, 654321, tzinfo=UTC),
        "doc": json.dumps({"name": "Zoë", "tags": ["a", 1, None], "n": 1.5}),
    }


def assert_typed_row(row: dict[str, Any], full: dict[str, Any]) -> None:
    """`row`, read back from the warehouse, holds `full`'s values with their Python types."""
    for name, want in full.items():
        have = row[name]
        if name == "doc":
            have = json.loads(have) if isinstance(have, str | bytes) else have
            assert have == json.loads(want), name
        elif name == "big":
            assert Decimal(str(have)) == want, name  # local stores it as exact text
        elif name == "at_utc":
            assert have == want and have.utcoffset() == dt.timedelta(0), name
        else:
            assert have == want, f"{name}: {have!r} != {want!r}"
            assert type(have) is type(want), f"{name}: {type(have)} != {type(want)}"


def scenario_types_round_trip(h: Harness) -> None:
    cols = type_columns(h)
    t = TargetTable(h.dataset, "typed", cols, ("id",), "every type")
    full = typed_row(h)
    empty = {c.name: None for c in cols} | {"id": 2}
    h.wh.load(t, [batch(t, D1, [full, empty])], D1, D1)

    reported = h.wh.columns(h.dataset, "typed")
    assert reported is not None
    assert {c.name: reported[c.name] for c in cols} == {c.name: h.type_of(c) for c in cols}

    got = {r["id"]: r for r in h.rows("typed")}
    assert set(got) == {1, 2}
    assert all(v is None for k, v in got[2].items() if k not in ("id", PARTITION_COLUMN))
    row = got[1]
    assert row[PARTITION_COLUMN] == D1
    assert_typed_row(row, full)
    assert h.staging_leftovers() == []


def scenario_change_batches(h: Harness) -> None:
    """Change capture's batches (plex_etl.cdc): rows merged by key and keys deleted with the
    positions in one transaction, every type read back as a load writes it; a batch against
    positions another writer moved writes nothing. Both ways a warehouse has of staging a batch
    (BigQuery: literals in the commit's script, or staging tables)."""
    from plex_etl.warehouse.base import PositionConflict, TableChanges

    cols = type_columns(h)
    full = typed_row(h)
    ways = {"inline": None, "staged": 0} if hasattr(h.wh, "cdc_inline_bytes") else {"": None}
    for way, inline_bytes in ways.items():
        name = f"changed_{way}".rstrip("_")
        t = TargetTable(h.dataset, name, cols, ("id",), "change batches")
        h.wh.load(t, [batch(t, D1, [{"id": 0, "label": "loaded"}])], D1, D1)
        saved = getattr(h.wh, "cdc_inline_bytes", None)
        if inline_bytes is not None:
            h.wh.cdc_inline_bytes = inline_bytes  # type: ignore[attr-defined]
        try:
            def changes(day: dt.date, rows: list[dict[str, Any]], deleted: list[int],
                        table: TargetTable = t) -> list[TableChanges]:
                upserts = pa.Table.from_batches([batch(table, day, rows)], table.arrow_schema)
                return [TableChanges(table, upserts, pa.table({"id": pa.array(deleted, pa.int64())}))]

            h.wh.apply_changes(h.dataset, name, changes(D1, [full, {"id": 2}, {"id": 3, "label": "new"}], []),
                               {name: "log.1:10"}, {name: None})
            h.wh.apply_changes(h.dataset, name, changes(D2, [{"id": 3, "label": "moved"}], [0, 2]),
                               {name: "log.1:20"}, {name: "log.1:10"})
            with pytest.raises(PositionConflict):
                h.wh.apply_changes(h.dataset, name, changes(D2, [{"id": 9}], [1]), {name: "log.1:30"},
                                   {name: "log.1:10"})
        finally:
            if inline_bytes is not None:
                h.wh.cdc_inline_bytes = saved  # type: ignore[attr-defined]
        got = {r["id"]: r for r in h.rows(name)}
        assert set(got) == {1, 3}, (way, sorted(got))
        assert got[1][PARTITION_COLUMN] == D1
        assert_typed_row(got[1], full)
        assert (got[3]["label"], got[3][PARTITION_COLUMN]) == ("moved", D2)
        assert h.wh.cdc_positions(h.dataset, name) == {name: "log.1:20"}  # type: ignore[attr-defined]
    assert h.staging_leftovers() == []


def scenario_counts_retention_views(h: Harness) -> None:
    t = simple_target(h, "stock_snapshot")
    h.wh.load(
        t, [batch(t, D1, people([1, 2])), batch(t, D2, people([1, 2, 3])),
            batch(t, D3, people([1])), batch(t, D4, people([1, 2, 3, 4]))],
        D1, D4,
    )
    assert h.wh.count_by_partition(h.dataset, "stock_snapshot", D2, D3) == {D2: 3, D3: 1}
    assert h.wh.count_by_partition(h.dataset, "stock_snapshot", D1 - dt.timedelta(9), D1 -
                                   dt.timedelta(1)) == {}
    assert h.wh.count_by_partition(h.dataset, "missing", D1, D4) == {}
    assert h.wh.columns(h.dataset, "missing") is None

    assert h.wh.delete_partitions_before(h.dataset, "stock_snapshot", D3) == 5
    assert h.wh.count_by_partition(h.dataset, "stock_snapshot", D1, D4) == {D3: 1, D4: 4}
    assert h.wh.delete_partitions_before(h.dataset, "stock_snapshot", D3) == 0
    assert h.wh.delete_partitions_before(h.dataset, "missing", D3) == 0

    ref = f"{h.dataset}.stock_snapshot"
    h.wh.create_view(
        h.dataset, "stock_latest",
        f"SELECT id, name FROM {ref} WHERE {PARTITION_COLUMN} = "
        f"(SELECT MAX({PARTITION_COLUMN}) FROM {ref})",
    )
    got = h.wh.query(f"SELECT * FROM {h.dataset}.stock_latest ORDER BY id")
    assert got.column_names == ["id", "name"]
    assert got.to_pylist() == people([1, 2, 3, 4])
    # create_view replaces.
    h.wh.create_view(h.dataset, "stock_latest", f"SELECT COUNT(*) AS n FROM {ref}")
    assert h.wh.query(f"SELECT n FROM {h.dataset}.stock_latest").to_pylist() == [{"n": 5}]

    with pytest.raises(WarehouseError):
        h.wh.query(f"SELECT nope FROM {h.dataset}.missing")


# ---------------------------------------------------------------------- the type map's types
# MySQL DECIMAL (and BIGINT UNSIGNED) values at their extremes, as MySQL prints them.
DECIMAL_EXTREMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "u64": ("bigint(20) unsigned", ("18446744073709551615", "0")),
    "d38_9": ("decimal(38,9)", ("99999999999999999999999999999.999999999",
                                "-99999999999999999999999999999.999999999")),
    "d65_30": ("decimal(65,30)", (
        "99999999999999999999999999999999999.999999999999999999999999999999",
        "-99999999999999999999999999999999999.999999999999999999999999999999",
        "0.000000000000000000000000000001")),
    "d38_10": ("decimal(38,10)", ("9999999999999999999999999999.9999999999",
                                  "-9999999999999999999999999999.9999999999")),
    "d38_0": ("decimal(38,0)", ("99999999999999999999999999999999999999",
                                "-99999999999999999999999999999999999999")),
}
# Values of the same columns with at most 20 integer and 18 fractional digits.
DECIMAL_MODERATE: dict[str, str] = {
    "u64": "9223372036854775808", "d38_9": "-12345678901234567890.123456789",
    "d65_30": "-12345678901234567890.123456789012345678", "d38_10": "1234567890123456789.0123456789",
    "d38_0": "-12345678901234567890",
}


def mapped_type(name: str, column_type: str, override: str | None = None) -> MappedType:
    """The type map's mapping of a MySQL column `name` of type `column_type`."""
    from plex_etl.catalog.model import Column
    from plex_etl.typemap import map_column

    data_type = column_type.split("(")[0].split()[0]
    return map_column(Column(name=name, ordinal=1, column_type=column_type, data_type=data_type,
                             nullable=True), override)


def mapped_column(name: str, column_type: str, override: str | None = None) -> WarehouseColumn:
    """A warehouse column exactly as the type map maps the MySQL `column_type`."""
    m = mapped_type(name, column_type, override)
    return WarehouseColumn(name, m.arrow_type, m.bigquery_type, m.local_type)


def decimal_target(h: Harness, name: str, columns: Sequence[str] = tuple(DECIMAL_EXTREMES)) -> TargetTable:
    cols = tuple(mapped_column(c, DECIMAL_EXTREMES[c][0]) for c in columns)
    return TargetTable(h.dataset, name, (ID, *cols), ("id",))


def mysql_rows(target: TargetTable, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of MySQL text converted by the type map (as extraction does): id kept. The
    columns of `target` (a decimal_target) are named by DECIMAL_EXTREMES."""
    from plex_etl.typemap import convert

    out = [{"id": r["id"]} for r in rows]
    for c in target.columns[1:]:
        texts = [r.get(c.name) for r in rows]
        raw = pa.array([None if t is None else t.encode() for t in texts], pa.binary())
        values, _ = convert(raw, mapped_type(c.name, DECIMAL_EXTREMES[c.name][0]), c.name)
        for o, v in zip(out, values.to_pylist(), strict=True):
            o[c.name] = v
    return out


def decimal_values(h: Harness, table: str) -> dict[int, dict[str, Decimal | None]]:
    """Rows of a decimal table by id, values as Decimal (local keeps wide ones as text)."""
    got = {}
    for r in h.rows(table):
        key = r.pop("id")
        got[key] = {
            k: None if v is None else Decimal(str(v)) for k, v in r.items() if k != PARTITION_COLUMN
        }
    return got


def scenario_every_mapped_type_loads(h: Harness) -> None:
    """One column per MySQL type of the type map's documentation (every type it produces),
    loaded with NULLs, plus decimal values every warehouse holds exactly."""
    from plex_etl.typemap import DOC_EXAMPLES, TypeMappingError

    cols: list[WarehouseColumn] = []
    for i, (column_type, override) in enumerate(DOC_EXAMPLES):
        try:
            cols.append(mapped_column(f"c{i}", column_type, override))
        except TypeMappingError:
            continue
    t = TargetTable(h.dataset, "every_type", (ID, *cols), ("id",))
    h.wh.load(t, [batch(t, D1, [{"id": 1}])], D1, D1)
    reported = h.wh.columns(h.dataset, "every_type")
    assert reported is not None
    wrong = {c.name: (c.bigquery_type, c.local_type, reported[c.name]) for c in cols
             if h.canonical(reported[c.name]) != h.canonical(h.type_of(c))}
    assert not wrong, wrong
    assert [r["id"] for r in h.rows("every_type")] == [1]

    d = decimal_target(h, "moderate_decimals")
    rows = mysql_rows(d, [{"id": 1, **DECIMAL_MODERATE}, {"id": 2}])
    h.wh.load(d, [batch(d, D1, rows)], D1, D1)
    assert decimal_values(h, "moderate_decimals") == {
        1: {c: Decimal(v) for c, v in DECIMAL_MODERATE.items()},
        2: dict.fromkeys(DECIMAL_MODERATE),
    }
    assert h.staging_leftovers() == []


def scenario_latest_view_and_orphans(h: Harness) -> None:
    """The `_latest` view reads the literal latest snapshot; orphan checks judge a snapshot
    parent by its latest snapshot and the child's rows within the given days."""
    from plex_etl.warehouse.queries import latest_partition, latest_view_sql, orphan_query

    shop = simple_target(h, "shop")
    h.wh.load(shop, [batch(shop, D1, people([1, 2, 3])), batch(shop, D2, people([1, 2]))], D1, D2)
    assert latest_partition(h.wh, h.dataset, "shop") == D2
    h.wh.create_view(h.dataset, "shop_latest", latest_view_sql(h.dataset, "shop", D2))
    got = h.wh.query(f"SELECT id FROM {h.dataset}.shop_latest ORDER BY id").to_pylist()
    assert got == [{"id": 1}, {"id": 2}]

    shop_id = WarehouseColumn("shop_id", pa.int64(), "INT64", "BIGINT")
    sale = simple_target(h, "sale", shop_id)
    h.wh.load(sale, [batch(sale, D1, [{"id": 1, "shop_id": 1}, {"id": 2, "shop_id": 3}]),
                     batch(sale, D2, [{"id": 3, "shop_id": 2}, {"id": 4, "shop_id": 9},
                                      {"id": 5, "shop_id": None}])], D1, D2)

    def orphans(**kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
        q = orphan_query(h.dataset, "sale", ("shop_id",), "shop", ("id",), **kwargs)
        n = int(h.wh.query(q.count_sql).column(0)[0].as_py())
        keys = h.wh.query(q.keys_sql).to_pylist()
        assert all(isinstance(k["landed"], dt.datetime) and k["landed"].tzinfo for k in keys)
        return n, [{"shop_id": k["shop_id"], "rows": k["child_rows"]} for k in keys]

    # Shop 3 is gone from the latest snapshot: sale 2 is now a candidate, like sale 4.
    assert orphans(parent_latest=D2) == (2, [{"shop_id": 3, "rows": 1}, {"shop_id": 9, "rows": 1}])
    assert orphans() == (1, [{"shop_id": 9, "rows": 1}])  # any snapshot
    assert orphans(parent_latest=D2, start=D2, end=D2) == (1, [{"shop_id": 9, "rows": 1}])
    assert orphans(parent_latest=D2, end=D1) == (1, [{"shop_id": 3, "rows": 1}])
    assert orphans(parent_latest=D2, keys=1) == (2, [{"shop_id": 3, "rows": 1}])  # at most `keys` keys
    # A dated parent: every child row whose parent is missing, whatever its day (whether the
    # warehouse should hold that parent is for MySQL and the load times to say: plex_etl/orphans.py).
    h.wh.load(shop, [batch(shop, D2, people([1, 2]))], D2, D2)
    h.wh.delete_partitions_before(h.dataset, "shop", D2)
    assert orphans() == (2, [{"shop_id": 3, "rows": 1}, {"shop_id": 9, "rows": 1}])
    assert h.staging_leftovers() == []


# Every scenario above, run by each warehouse's test module against its own harness.
SCENARIOS = [
    scenario_create_and_reload,
    scenario_upsert,
    scenario_failure_mid_stream,
    scenario_schema_evolution,
    scenario_retired_column_keeps_its_history,
    scenario_partition_out_of_range,
    scenario_types_round_trip,
    scenario_change_batches,
    scenario_counts_retention_views,
    scenario_every_mapped_type_loads,
    scenario_latest_view_and_orphans,
]
