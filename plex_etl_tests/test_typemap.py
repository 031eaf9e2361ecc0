"""The type map against the real MariaDB: every type maps as documented, and values
read exactly the way the extractor reads them (select_sql, the binary read of
extract/_binary.c, convert where the value came as text) come back equal, or changed only in
a documented, counted way; every value, fix and error is also the one that the same
statement read through the text protocol gives (what the reader read before).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import MySQLdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plex_etl import typemap
from plex_etl.canonical import markdown_table as canonical_table
from plex_etl.catalog.model import Column
from plex_etl.extract.native import binary_statement
from plex_etl.extract.stream import column_kinds, fetched_arrays, typed
from plex_etl.typemap import (
    FIXES,
    RULES,
    MappedType,
    TypeMappingError,
    ValueConversionError,
    convert,
    map_column,
    markdown_rules,
    markdown_table,
    rule_fixes,
)
from plex_etl.warehouse.base import stage_array
from plex_etl.warehouse.local import _staging_type

DATABASE = "plexetl_t_typemap"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "type-mapping.md"
PROPERTY = settings(max_examples=40, deadline=None)


def column(column_type: str, data_type: str | None = None, charset: str | None = None,
           name: str = "c") -> Column:
    data_type = data_type or column_type.split("(")[0].split()[0]
    return Column(name=name, ordinal=1, column_type=column_type, data_type=data_type,
                  nullable=True, charset=charset)


# --- (a) the mapping table -------------------------------------------------------------------

D128, D256 = pa.decimal128, pa.decimal256
TS, TSZ = pa.timestamp("us"), pa.timestamp("us", tz="UTC")
PLAIN = "{column}"

# (column_type, charset, override) -> (arrow, bigquery, duckdb, select_sql, rule)
EXPECTED: list[tuple[tuple[str, str | None, str | None], tuple[Any, ...]]] = [
    (("tinyint(4)", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("tinyint(3) unsigned", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("tinyint(1)", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("tinyint(1)", None, "bool"), (pa.bool_(), "BOOL", "BOOLEAN", PLAIN, "bool")),
    (("tinyint(1)", None, "BOOL"), (pa.bool_(), "BOOL", "BOOLEAN", PLAIN, "bool")),
    (("smallint(5) unsigned", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("mediumint(8) unsigned", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("int(10) unsigned zerofill", None, None),
     (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("bigint(20)", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("bigint(20) unsigned", None, None),
     (D128(20, 0), "NUMERIC(20, 0)", "DECIMAL(20,0)", PLAIN, "decimal")),
    (("bigint(20) unsigned", None, "int64"), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("bigint(20) unsigned", None, "bignumeric"),
     (D128(20, 0), "BIGNUMERIC(20, 0)", "DECIMAL(20,0)", PLAIN, "decimal")),
    (("int(11)", None, "float64"), (pa.float64(), "FLOAT64", "DOUBLE", PLAIN, "float64_rounded")),
    (("int(11)", None, "string"), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("decimal(15,4)", None, None),
     (D128(15, 4), "NUMERIC(15, 4)", "DECIMAL(15,4)", PLAIN, "decimal")),
    (("decimal(10,2) unsigned", None, None),
     (D128(10, 2), "NUMERIC(10, 2)", "DECIMAL(10,2)", PLAIN, "decimal")),
    (("decimal(38,9)", None, None),
     (D128(38, 9), "NUMERIC(38, 9)", "DECIMAL(38,9)", PLAIN, "decimal")),
    (("decimal(20,10)", None, None),
     (D128(20, 10), "BIGNUMERIC(20, 10)", "DECIMAL(20,10)", PLAIN, "decimal")),
    (("decimal(39,1)", None, None),
     (D256(39, 1), "BIGNUMERIC(39, 1)", "VARCHAR", PLAIN, "decimal")),
    (("decimal(65,30)", None, None),
     (D256(65, 30), "BIGNUMERIC(65, 30)", "VARCHAR", PLAIN, "decimal")),
    (("decimal(65,0)", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "decimal_text")),
    (("decimal(10,0)", None, "int64"), (pa.int64(), "INT64", "BIGINT", PLAIN, "integer")),
    (("decimal(20,10)", None, "bignumeric"),
     (D128(20, 10), "BIGNUMERIC(20, 10)", "DECIMAL(20,10)", PLAIN, "decimal")),
    (("decimal(15,4)", None, "float64"),
     (pa.float64(), "FLOAT64", "DOUBLE", PLAIN, "float64_rounded")),
    (("float", None, None),
     (pa.float64(), "FLOAT64", "DOUBLE", "CAST({column} AS DOUBLE)", "float")),
    (("float(7,4)", None, "string"),
     (pa.string(), "STRING", "VARCHAR", "CAST(CAST({column} AS DOUBLE) AS CHAR)", "text")),
    (("double", None, "string"), (pa.string(), "STRING", "VARCHAR", "CAST({column} AS CHAR)", "text")),
    (("double", None, None), (pa.float64(), "FLOAT64", "DOUBLE", PLAIN, "float")),
    (("double", "real", None), (pa.float64(), "FLOAT64", "DOUBLE", PLAIN, "float")),
    (("bit(1)", None, None), (pa.bool_(), "BOOL", "BOOLEAN", "{column} + 0", "bool")),
    (("bit(10)", None, None), (pa.int64(), "INT64", "BIGINT", "{column} + 0", "integer")),
    (("bit(63)", None, None), (pa.int64(), "INT64", "BIGINT", "{column} + 0", "integer")),
    (("bit(64)", None, None),
     (D128(20, 0), "NUMERIC(20, 0)", "DECIMAL(20,0)", "{column} + 0", "decimal")),
    (("bit(16)", None, "bytes"), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("date", None, None), (pa.date32(), "DATE", "DATE", PLAIN, "date")),
    (("datetime", None, None), (TS, "DATETIME", "TIMESTAMP", PLAIN, "datetime")),
    (("datetime(6)", None, None), (TS, "DATETIME", "TIMESTAMP", PLAIN, "datetime")),
    (("timestamp(3)", None, None), (TSZ, "TIMESTAMP", "TIMESTAMPTZ", PLAIN, "timestamp")),
    (("datetime", None, "string"), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("time(2)", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "time_text")),
    (("year(4)", None, None), (pa.int64(), "INT64", "BIGINT", PLAIN, "year")),
    (("year", None, "int64"), (pa.int64(), "INT64", "BIGINT", PLAIN, "year")),
    (("year(2)", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("year(2)", None, "string"), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("char(3)", "latin1", None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("varchar(20)", "utf8mb4", None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("varchar(20)", "binary", None), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("tinytext", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("mediumtext", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("longtext", "utf8mb4", None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("longtext", "utf8mb4", "json"), (pa.string(), "JSON", "JSON", PLAIN, "json")),
    (("text", None, "bytes"),
     (pa.binary(), "BYTES", "BLOB", "CAST({column} AS BINARY)", "bytes")),
    (("binary(16)", None, None), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("varbinary(8)", None, "string"), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("tinyblob", None, None), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("mediumblob", None, None), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("longblob", None, None), (pa.binary(), "BYTES", "BLOB", PLAIN, "bytes")),
    (("enum('1','2')", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("set('a','b')", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("json", None, None), (pa.string(), "JSON", "JSON", PLAIN, "json")),
    (("geometry", None, None),
     (pa.string(), "STRING", "VARCHAR", "ST_AsText({column})", "spatial_wkt")),
    (("multipolygon", None, None),
     (pa.string(), "STRING", "VARCHAR", "ST_AsText({column})", "spatial_wkt")),
    (("point", None, "bytes"), (pa.binary(), "BYTES", "BLOB", "ST_AsBinary({column})", "bytes")),
    (("uuid", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
    (("inet6", None, None), (pa.string(), "STRING", "VARCHAR", PLAIN, "text")),
]


@pytest.mark.parametrize(("source", "expected"), EXPECTED, ids=lambda v: str(v))
def test_mapping_table(source: tuple[str, str | None, str | None], expected: tuple) -> None:
    column_type, extra, override = source
    data_type, charset = (extra, None) if extra == "real" else (None, extra)
    mapped = map_column(column(column_type, data_type, charset), override)
    assert (mapped.arrow_type, mapped.bigquery_type, mapped.local_type, mapped.select_sql,
            mapped.rule) == expected
    assert mapped.rule in RULES
    assert "{column}" in mapped.select_sql


def test_generated_columns_map_like_their_type() -> None:
    plain = map_column(column("int(11)"))
    generated = map_column(Column("g", 2, "int(11)", "int", True, generated=True,
                                  extra="VIRTUAL GENERATED"))
    assert generated == plain


def test_every_type_is_documented_and_every_fix_is_used() -> None:
    documented = {ct.split("(")[0].split()[0] for ct, _ in typemap.DOC_EXAMPLES}
    assert documented == set(typemap._TYPES)
    used = {fix for rule in RULES for fix in rule_fixes(rule)}
    assert used == set(FIXES)


def test_docs_contain_the_generated_tables() -> None:
    text = DOCS.read_text()
    assert markdown_table() in text
    assert markdown_rules() in text
    assert canonical_table() in text  # what reconciliation compares, beside the type map


# --- (d) mapping errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column_type", "data_type", "override", "message"),
    [
        ("vector(3)", None, None, "unknown MySQL type 'vector'"),
        ("foo", None, None, "unknown MySQL type 'foo'"),
        ("date", None, "bool", "override 'bool' is not possible"),
        ("varchar(10)", None, "int128", "unknown type override 'int128'"),
        ("decimal(40,10)", None, "numeric", "does not fit numeric"),
        ("decimal(65,0)", None, "bignumeric", "does not fit bignumeric"),
        ("decimal(10,2)", None, "int64", "scale > 0"),
        ("year(2)", None, "int64", "YEAR(2)"),
        ("decimal(10,2)", None, "bool", "not possible"),
    ],
)
def test_type_mapping_errors(column_type: str, data_type: str | None, override: str | None,
                             message: str) -> None:
    with pytest.raises(TypeMappingError) as info:
        map_column(column(column_type, data_type, name="Importe Neto"), override)
    assert message in str(info.value)
    assert "'Importe Neto'" in str(info.value)
    assert isinstance(info.value, ValueError)


# --- the real database -----------------------------------------------------------------------


class Scratch:
    """Scratch tables in DATABASE, read exactly the way the extractor reads them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.tables: dict[str, str] = {}
        self.columns: dict[str, Column] = {}
        self.duckdb = duckdb.connect()
        self.duckdb.execute("SET TimeZone = 'UTC'")

    def query(self, sql: str) -> list[tuple]:
        self.connection.query(sql.encode())
        result = self.connection.store_result()
        return list(result.fetch_row(maxrows=0, how=0)) if result is not None else []

    def table(self, ddl: str) -> str:
        if ddl not in self.tables:
            name = f"t{len(self.tables)}"
            self.query(f"CREATE TABLE `{name}` (id INT AUTO_INCREMENT PRIMARY KEY, c {ddl})")
            self.tables[ddl] = name
        return self.tables[ddl]

    def catalog_column(self, table: str) -> Column:
        if table not in self.columns:
            self.columns[table] = self._catalog_column(table)
        return self.columns[table]

    def _catalog_column(self, table: str) -> Column:
        ((data_type, column_type, charset, generated),) = self.query(
            "SELECT DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, IS_GENERATED "
            f"FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{DATABASE}' "
            f"AND TABLE_NAME = '{table}' AND COLUMN_NAME = 'c'"
        )
        return Column(
            name="c", ordinal=2, column_type=column_type.decode(), data_type=data_type.decode(),
            nullable=True, charset=charset.decode() if charset else None,
            generated=generated != b"NEVER",
        )

    def read(self, ddl: str, literals: Sequence[str], override: str | None = None
             ) -> tuple[pa.Array, dict[str, int], MappedType]:
        table = self.table(ddl)
        self.query(f"DELETE FROM `{table}`")
        if literals:
            rows = ", ".join(f"({literal})" for literal in literals)
            self.query(f"INSERT INTO `{table}` (c) VALUES {rows}")
        mapped = map_column(self.catalog_column(table), override)
        select = mapped.select_sql.format(column=f"`{table}`.`c`")
        sql = f"SELECT {select} FROM `{table}` ORDER BY id"
        raw = pa.array([row[0] for row in self.query(sql)], type=pa.binary())
        try:
            values, fixes = convert(raw, mapped, "c")
        except ValueConversionError as exc:
            with pytest.raises(ValueConversionError) as binary_error:
                self.binary_read(sql, mapped)
            assert str(binary_error.value) == str(exc)
            raise
        binary_values, binary_fixes = self.binary_read(sql, mapped)
        assert binary_values.equals(values) and binary_fixes == fixes, (binary_values, values)
        return binary_values, binary_fixes, mapped

    def binary_read(self, sql: str, mapped: MappedType) -> tuple[pa.Array, dict[str, int]]:
        """The statement's one column as the extractor reads it: binary protocol, then typed."""
        statement = binary_statement(self.connection, sql, column_kinds([mapped]))
        values, fixes = [], Counter()
        try:
            while True:
                rows, columns = statement.fetch(3)  # several fetches: their buffers start afresh
                if not rows:
                    break
                (raw,) = fetched_arrays(rows, columns, statement.kinds, [mapped.arrow_type])
                array, fetch_fixes = typed(raw, mapped, "c", columns[0][4])
                values.append(array)
                fixes.update(fetch_fixes)
        finally:
            statement.close()
        if not values:
            return typed(pa.array([], pa.binary()), mapped, "c")
        return pa.chunked_array(values).combine_chunks(), dict(fixes)

    def check(self, ddl: str, cases: Sequence[tuple[str, Any, str | None]],
              override: str | None = None) -> pa.Array:
        """cases: (SQL literal, expected Python value, fix expected for it or None)."""
        values, fixes, mapped = self.read(ddl, [c[0] for c in cases], override)
        assert values.type == mapped.arrow_type
        assert values.to_pylist() == [c[1] for c in cases]
        assert fixes == dict(Counter(c[2] for c in cases if c[2]))
        assert_warehouse_accepts(values, mapped, self.duckdb)
        return values


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    connection = MySQLdb._mysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
    )
    for sql in (f"DROP DATABASE IF EXISTS {DATABASE}", f"CREATE DATABASE {DATABASE}",
                f"USE {DATABASE}",
                # Strict (a bad test literal fails loudly) but zero, partially zero and
                # invalid dates storable, as legacy applications left them.
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ALLOW_INVALID_DATES'"):
        connection.query(sql)
    try:
        yield Scratch(connection)
    finally:
        connection.query(f"DROP DATABASE IF EXISTS {DATABASE}")
        connection.close()


def quote(connection: Any, text: str) -> str:
    return "'" + connection.escape_string(text.encode()).decode() + "'"


def null_or(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Cases for `strategy`, sometimes a NULL."""
    return st.one_of(st.just(("NULL", None, None)), strategy)


def cases(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(null_or(strategy), max_size=12)


# --- (c) warehouse acceptance ----------------------------------------------------------------

# What a BigQuery load from Parquet accepts into each column type (no BigQuery server
# here): the Arrow type written to Parquet must be one of these.
BIGQUERY_PARQUET: dict[str, Any] = {
    "INT64": lambda t: t == pa.int64(),
    "FLOAT64": lambda t: t == pa.float64(),
    "BOOL": lambda t: t == pa.bool_(),
    "STRING": lambda t: t == pa.string(),
    "BYTES": lambda t: t == pa.binary(),
    "DATE": lambda t: t == pa.date32(),
    "DATETIME": lambda t: t == pa.timestamp("us"),  # Parquet isAdjustedToUTC=false
    "TIMESTAMP": lambda t: t == pa.timestamp("us", tz="UTC"),  # isAdjustedToUTC=true
    "JSON": lambda t: t == pa.string(),  # JSON text into a JSON column
    # NUMERIC(P,S): S <= 9, P-S <= 29; BIGNUMERIC(P,S): S <= 38, P-S <= 38.
    "NUMERIC": lambda t: pa.types.is_decimal(t) and t.scale <= 9 and t.precision - t.scale <= 29,
    "BIGNUMERIC": lambda t: pa.types.is_decimal(t) and t.scale <= 38
    and t.precision - t.scale <= 38,
}


def bigquery_accepts(bigquery_type: str, arrow_type: pa.DataType) -> bool:
    kind = bigquery_type.split("(")[0]
    if kind in ("NUMERIC", "BIGNUMERIC") and "(" in bigquery_type:
        p, s = (int(x) for x in bigquery_type[len(kind) + 1:-1].split(","))
        if (arrow_type.precision, arrow_type.scale) != (p, s):
            return False
    return BIGQUERY_PARQUET[kind](arrow_type)


def normalise(value: Any, json_text: bool) -> Any:
    if json_text and value is not None:
        return json.loads(value)
    if isinstance(value, float) and value == 0:
        return 0.0  # -0.0 == 0.0 anyway; keep the comparison obvious
    return value


def local_array(values: pa.Array) -> pa.Array:
    """The values as the local warehouse stages them (decimals beyond 38 digits as exact text)."""
    return stage_array(values, _staging_type(pa.field("value", values.type)))


def assert_warehouse_accepts(values: pa.Array, mapped: MappedType,
                             con: duckdb.DuckDBPyConnection) -> None:
    # BigQuery: the type table above, and the array writes to Parquet and reads back.
    assert bigquery_accepts(mapped.bigquery_type, mapped.arrow_type), mapped
    buffer = io.BytesIO()
    pq.write_table(pa.table({"c": values}), buffer)
    assert pq.read_table(io.BytesIO(buffer.getvalue())).column("c").combine_chunks().equals(
        values)
    # DuckDB: a column of local_type takes the values as the local warehouse stages them.
    local = local_array(values)
    con.execute(f"CREATE OR REPLACE TABLE t (c {mapped.local_type})")
    con.register("arrow_table", pa.table({"c": local}))
    con.execute("INSERT INTO t SELECT c FROM arrow_table")
    back = con.sql("SELECT c FROM t").to_arrow_table().column("c").to_pylist()
    json_text = mapped.local_type == "JSON"
    assert [normalise(v, json_text) for v in back] == [
        normalise(v, json_text) for v in local.to_pylist()
    ]


# --- (b) properties per type family -------------------------------------------------------------

INTEGER_BOUNDS = {
    "tinyint": (-(2**7), 2**7 - 1, 2**8 - 1),
    "smallint": (-(2**15), 2**15 - 1, 2**16 - 1),
    "mediumint": (-(2**23), 2**23 - 1, 2**24 - 1),
    "int": (-(2**31), 2**31 - 1, 2**32 - 1),
    "bigint": (-(2**63), 2**63 - 1, 2**64 - 1),
}
INTEGER_TYPES = [(t, u) for t in INTEGER_BOUNDS for u in (False, True)]


@pytest.mark.parametrize(("data_type", "unsigned"), INTEGER_TYPES)
@PROPERTY
@given(data=st.data())
def test_integers(scratch: Scratch, data_type: str, unsigned: bool, data: st.DataObject) -> None:
    low, high, umax = INTEGER_BOUNDS[data_type]
    low, high = (0, umax) if unsigned else (low, high)
    ints = st.one_of(st.sampled_from([low, high, 0, 1, -1 if low else 1]),
                     st.integers(low, high))
    wide = data_type == "bigint" and unsigned
    values = data.draw(cases(ints.map(lambda v: (str(v), Decimal(v) if wide else v, None))))
    scratch.check(f"{data_type}{' unsigned' if unsigned else ''}", values)


@PROPERTY
@given(values=cases(st.sampled_from([0, 1]).map(lambda v: (str(v), bool(v), None))))
def test_tinyint1_as_bool(scratch: Scratch, values: list) -> None:
    scratch.check("tinyint(1)", values, override="bool")
    scratch.check("tinyint(1)", [(c[0], None if c[1] is None else int(c[1]), None)
                                 for c in values])


def test_tinyint1_bool_override_rejects_other_values(scratch: Scratch) -> None:
    with pytest.raises(ValueConversionError) as info:
        scratch.read("tinyint(1)", ["1", "0", "NULL", "-3"], override="bool")
    assert "'c'" in str(info.value) and "'-3'" in str(info.value)


def test_unsigned_bigint_int64_override(scratch: Scratch) -> None:
    scratch.check("bigint unsigned", [("9223372036854775807", 2**63 - 1, None)], "int64")
    with pytest.raises(ValueConversionError, match="'9223372036854775808'"):
        scratch.read("bigint unsigned", ["9223372036854775808"], override="int64")


DECIMALS = [(15, 4), (10, 0), (5, 5), (38, 9), (38, 0), (20, 10), (40, 10), (65, 30),
            (65, 0), (65, 20)]


@pytest.mark.parametrize(("p", "s"), DECIMALS)
@PROPERTY
@given(data=st.data())
def test_decimals(scratch: Scratch, p: int, s: int, data: st.DataObject) -> None:
    top = 10**p - 1
    unscaled = st.one_of(st.sampled_from([0, top, -top, 1, -1]), st.integers(-top, top))
    as_text = map_column(column(f"decimal({p},{s})")).rule == "decimal_text"

    def case(n: int) -> tuple[str, Any, None]:
        digits = str(abs(n)).rjust(s + 1, "0")
        text = ("-" if n < 0 else "") + digits[: len(digits) - s] + ("." + digits[-s:] if s else "")
        return text, text if as_text else Decimal(text), None

    values = data.draw(cases(unscaled.map(case)))
    scratch.check(f"decimal({p},{s})", values)


DOUBLE_EDGES = [5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                -1.7976931348623157e308, 0.1, 1 / 3, -0.0, 2.0**53 + 2, 123456789.123456789]


@PROPERTY
@given(values=cases(st.one_of(st.sampled_from(DOUBLE_EDGES),
                              st.floats(allow_nan=False, allow_infinity=False))
                    .map(lambda v: (repr(v), v, None))))
def test_doubles(scratch: Scratch, values: list) -> None:
    scratch.check("double", values)


def test_zerofill_as_string_is_the_server_text(scratch: Scratch) -> None:
    # Integers travel as numbers in the binary protocol: the C read pads them as the server does.
    for ddl in ("int(5) zerofill", "bigint(255) zerofill"):
        values, _, _ = scratch.read(ddl, ["42", "0", "NULL", "4294967295"], override="string")
        width = int(ddl.split("(")[1].split(")")[0])
        assert values.to_pylist() == ["42".zfill(width), "0".zfill(width), None, "4294967295".zfill(width)]


def test_float_and_double_as_string_are_the_server_text(scratch: Scratch) -> None:
    # The binary protocol sends the double's 8 bytes: the type map has the server print it.
    for ddl in ("double", "float"):
        values, _, mapped = scratch.read(ddl, ["0.1", "1e30", "-2.5", "NULL", "16777216"], override="string")
        assert "AS CHAR" in mapped.select_sql and values.to_pylist()[2:] == ["-2.5", None, "16777216"]


def float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


FLOAT_EDGES = [16777216.0, 16777217.0, 3.4028234663852886e38, 1.1754943508222875e-38,
               1.401298464324817e-45, 0.1, -2.5]


@PROPERTY
@given(values=cases(st.one_of(st.sampled_from(FLOAT_EDGES),
                              st.floats(width=32, allow_nan=False, allow_infinity=False))
                    .map(float32).map(lambda v: (repr(v), v, None))))
def test_floats(scratch: Scratch, values: list) -> None:
    # Without CAST(... AS DOUBLE) 16777217 would read back as 16777200: the select_sql matters.
    scratch.check("float", values)


def test_float64_override_counts_rounding(scratch: Scratch) -> None:
    override = "float64"
    scratch.check("decimal(20,2)", [("0.10", 0.1, None), ("123456789012345678.12",
                                    123456789012345678.12, "rounded_to_float64")], override)
    scratch.check("bigint", [(str(2**53), float(2**53), None),
                             (str(2**53 + 1), float(2**53), "rounded_to_float64")], override)


ZERO_DATES = [
    ("0000-00-00", "zero_date_to_null"),
    ("2020-00-15", "partial_zero_date_to_null"),
    ("2020-05-00", "partial_zero_date_to_null"),
    ("0000-03-00", "partial_zero_date_to_null"),
    ("0000-01-01", "year_zero_date_to_null"),
    ("2020-02-31", "invalid_date_to_null"),
    ("2021-02-29", "invalid_date_to_null"),
    ("2019-04-31", "invalid_date_to_null"),
]
DATES = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))


def zero_date_cases(time_part: str = "") -> st.SearchStrategy:
    return st.sampled_from([(f"'{d}{time_part}'", None, fix) for d, fix in ZERO_DATES])


@PROPERTY
@given(values=cases(st.one_of(
    DATES.map(lambda d: (f"'{d.isoformat()}'", d, None)), zero_date_cases(),
    st.just(("'2020-02-29'", dt.date(2020, 2, 29), None)),
)))
def test_dates(scratch: Scratch, values: list) -> None:
    scratch.check("date", values)


def truncate(value: dt.datetime, fsp: int) -> dt.datetime:
    return value.replace(microsecond=value.microsecond - value.microsecond % 10 ** (6 - fsp))


@pytest.mark.parametrize("fsp", range(7))
@PROPERTY
@given(data=st.data())
def test_datetimes(scratch: Scratch, fsp: int, data: st.DataObject) -> None:
    moments = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
    valid = moments.map(lambda v: truncate(v, fsp)).map(
        lambda v: (f"'{v.isoformat(sep=' ')}'", v, None))
    values = data.draw(cases(st.one_of(valid, zero_date_cases(" 10:20:30"))))
    scratch.check(f"datetime({fsp})", values)


@pytest.mark.parametrize("fsp", [0, 3, 6])
@PROPERTY
@given(data=st.data())
def test_timestamps(scratch: Scratch, fsp: int, data: st.DataObject) -> None:
    moments = st.datetimes(min_value=dt.datetime(1970, 1, 1, 0, 0, 1),
                           max_value=dt.datetime(2038, 1, 19, 3, 14, 7))
    valid = moments.map(lambda v: truncate(v, fsp)).map(
        lambda v: (f"'{v.isoformat(sep=' ')}'", v.replace(tzinfo=dt.UTC), None))
    zero = st.just(("'0000-00-00 00:00:00'", None, "zero_date_to_null"))
    values = data.draw(cases(st.one_of(valid, zero)))
    scratch.check(f"timestamp({fsp}) NULL", values)


TIME_MAX_US = (838 * 3600 + 59 * 60 + 59) * 10**6


def mysql_time(microseconds: int, fsp: int) -> str:
    sign = "-" if microseconds < 0 else ""
    seconds, fraction = divmod(abs(microseconds), 10**6)
    text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{fraction:06d}"[: fsp + 1] if fsp else "")


@pytest.mark.parametrize("fsp", [0, 2, 6])
@PROPERTY
@given(data=st.data())
def test_times(scratch: Scratch, fsp: int, data: st.DataObject) -> None:
    step = 10 ** (6 - fsp)
    us = st.one_of(st.sampled_from([TIME_MAX_US, -TIME_MAX_US, 0, -step, 25 * 3600 * 10**6]),
                   st.integers(-TIME_MAX_US // step, TIME_MAX_US // step).map(lambda n: n * step))
    values = data.draw(cases(us.map(lambda n: (f"'{mysql_time(n, fsp)}'", mysql_time(n, fsp),
                                               None))))
    scratch.check(f"time({fsp})", values)


@PROPERTY
@given(values=cases(st.one_of(
    st.integers(1901, 2155).map(lambda y: (str(y), y, None)),
    st.just(("0", None, "zero_year_to_null")),
)))
def test_years(scratch: Scratch, values: list) -> None:
    scratch.check("year", values)


def test_year2_keeps_the_digits_mysql_shows(scratch: Scratch) -> None:
    scratch.query("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")  # YEAR(2) is deprecated
    try:
        scratch.check("year(2)", [("2005", "05", None), ("1999", "99", None), ("NULL", None, None)])
    finally:
        scratch.query("SET SESSION sql_mode = 'STRICT_ALL_TABLES,ALLOW_INVALID_DATES'")


UTF8 = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
LATIN1 = st.text(st.sampled_from("abcXYZ019 ,.;'\"\\%_-áéíóúÁÉÍÓÚñÑüÜçÇ¿¡ºª€·"), max_size=20)
EMOJI = st.sampled_from(["😀", "Ñandú 🐦", "café", "日本語", "a\x00b", "'; DROP TABLE x; --"])


@pytest.mark.parametrize(("ddl", "texts"), [
    ("varchar(40) CHARACTER SET utf8mb4", st.one_of(UTF8, EMOJI)),
    ("longtext CHARACTER SET utf8mb4", st.one_of(UTF8, EMOJI)),
    ("varchar(40) CHARACTER SET latin1", LATIN1),
    ("text CHARACTER SET latin1", LATIN1),
])
@PROPERTY
@given(data=st.data())
def test_strings(scratch: Scratch, ddl: str, texts: st.SearchStrategy,
                 data: st.DataObject) -> None:
    c = scratch.connection
    values = data.draw(cases(texts.map(lambda s: (quote(c, s), s, None))))
    scratch.check(ddl, values)


@PROPERTY
@given(data=st.data())
def test_char_drops_trailing_spaces(scratch: Scratch, data: st.DataObject) -> None:
    # CHAR(n) returns values without their pad spaces: that is the MySQL value.
    c = scratch.connection
    values = data.draw(cases(LATIN1.map(lambda s: (quote(c, s + "  "), s.rstrip(" "), None))))
    scratch.check("char(25) CHARACTER SET latin1", values)


BLOBS = st.one_of(st.binary(max_size=16),
                  st.sampled_from([b"\x00", b"\xff\xfe\x00", b"\x00" * 8, bytes(range(8))]))


@pytest.mark.parametrize("ddl", ["varbinary(16)", "blob", "binary(8)"])
@PROPERTY
@given(values=cases(BLOBS.map(lambda b: (f"X'{b.hex()}'", b, None))))
def test_binary(scratch: Scratch, ddl: str, values: list) -> None:
    if ddl == "binary(8)":  # BINARY(n) pads with 0x00: the stored value
        values = [(lit, None if b is None else b[:8].ljust(8, b"\x00"), fix)
                  for lit, b, fix in values if b is None or len(b) <= 8]
    scratch.check(ddl, values)


def test_binary_string_override_rejects_invalid_utf8(scratch: Scratch) -> None:
    scratch.check("varbinary(8)", [("X'636166c3a9'", "café", None)], override="string")
    with pytest.raises(ValueConversionError) as info:
        scratch.read("varbinary(8)", ["X'61ff'"], override="string")
    assert "'c'" in str(info.value) and "\\xff" in str(info.value)


def test_text_bytes_override_reads_the_stored_bytes(scratch: Scratch) -> None:
    scratch.check("varchar(8) CHARACTER SET latin1", [("'año'", b"a\xf1o", None)], "bytes")
    scratch.check("text CHARACTER SET utf8mb4", [("'año'", "año".encode(), None)], "bytes")


ENUM = ["a", "b c", "é", "", "1"]
SET = ["x", "y", "zé"]


@PROPERTY
@given(values=cases(st.sampled_from(ENUM).map(lambda v: (f"'{v}'", v, None))))
def test_enum(scratch: Scratch, values: list) -> None:
    members = ",".join(f"'{m}'" for m in ENUM)
    scratch.check(f"enum({members}) CHARACTER SET utf8mb4", values)


@PROPERTY
@given(values=cases(st.sets(st.sampled_from(SET)).map(lambda chosen: (
    "'" + ",".join(sorted(chosen, reverse=True)) + "'",  # any order in...
    ",".join(m for m in SET if m in chosen),  # ...definition order out
    None))))
def test_set(scratch: Scratch, values: list) -> None:
    members = ",".join(f"'{m}'" for m in SET)
    scratch.check(f"set({members}) CHARACTER SET utf8mb4", values)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)


@PROPERTY
@given(docs=st.lists(st.one_of(st.none(), JSON_VALUES), max_size=8))
def test_json(scratch: Scratch, docs: list) -> None:
    # MariaDB's JSON is LONGTEXT with a json_valid() check: mapped through override "json".
    c = scratch.connection
    literals = ["NULL" if d is None else quote(c, json.dumps(d, ensure_ascii=False)) for d in docs]
    values, fixes, mapped = scratch.read("json", literals, override="json")
    assert (mapped.bigquery_type, fixes) == ("JSON", {})
    assert [None if v is None else json.loads(v) for v in values.to_pylist()] == [
        None if d is None else d for d in docs]
    assert_warehouse_accepts(values, mapped, scratch.duckdb)


def test_json_override_rejects_invalid_documents(scratch: Scratch) -> None:
    with pytest.raises(ValueConversionError) as info:
        scratch.read("longtext", ["'[1]'", "'{not json'"], override="json")
    assert "'c'" in str(info.value) and "{not json" in str(info.value)


@PROPERTY
@given(data=st.data())
def test_bits(scratch: Scratch, data: st.DataObject) -> None:
    for width in (1, 10, 63, 64):
        ints = st.one_of(st.sampled_from([0, 2**width - 1]), st.integers(0, 2**width - 1))
        expected = {1: bool, 64: Decimal}.get(width, int)
        values = data.draw(cases(ints.map(lambda v, e=expected: (str(v), e(v), None))))
        scratch.check(f"bit({width})", values)


def test_bit_bytes_override_is_big_endian(scratch: Scratch) -> None:
    scratch.check("bit(16)", [("258", b"\x01\x02", None)], override="bytes")


@PROPERTY
@given(points=cases(st.tuples(st.integers(-3600, 3600), st.integers(-1800, 1800)).map(
    lambda xy: (f"POINT({xy[0] / 2}, {xy[1] / 4})", xy, None))))
def test_points(scratch: Scratch, points: list) -> None:
    def wkt(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else repr(v)

    scratch.check("point", [(lit, None if xy is None else
                             f"POINT({wkt(xy[0] / 2)} {wkt(xy[1] / 4)})", None)
                            for lit, xy, _ in points])
    wkb = [(lit, None if xy is None else struct.pack("<BIdd", 1, 1, xy[0] / 2, xy[1] / 4), None)
           for lit, xy, _ in points]
    scratch.check("point", wkb, override="bytes")


def test_other_spatial_types(scratch: Scratch) -> None:
    polygon = "POLYGON((0 0,10 0,10 10,0 10,0 0),(1 1,2 1,2 2,1 1))"
    scratch.check("geometry", [(f"ST_GeomFromText('{polygon}')", polygon, None),
                               ("ST_GeomFromText('LINESTRING(0 0,1 1.5)')",
                                "LINESTRING(0 0,1 1.5)", None)])
    scratch.check("multipoint", [("ST_GeomFromText('MULTIPOINT(0 0,1 2)')",
                                  "MULTIPOINT(0 0,1 2)", None)])


def test_mariadb_text_types(scratch: Scratch) -> None:
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    scratch.check("uuid", [(f"'{uuid}'", uuid, None)])
    scratch.check("inet6", [("'2001:db8::1'", "2001:db8::1", None), ("'::1'", "::1", None)])
    scratch.check("inet4", [("'10.1.2.3'", "10.1.2.3", None)])


def test_generated_column_reads_like_its_type(scratch: Scratch) -> None:
    table = scratch.table("int")
    scratch.query(f"ALTER TABLE `{table}` ADD COLUMN g DECIMAL(12,2) AS (c * 1.5) VIRTUAL")
    scratch.query(f"INSERT INTO `{table}` (c) VALUES (3), (NULL)")
    ((data_type, column_type, generated),) = scratch.query(
        "SELECT DATA_TYPE, COLUMN_TYPE, IS_GENERATED FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = '{DATABASE}' AND TABLE_NAME = '{table}' AND COLUMN_NAME = 'g'")
    mapped = map_column(Column("g", 3, column_type.decode(), data_type.decode(), True,
                               generated=generated != b"NEVER"))
    rows = scratch.query(f"SELECT {mapped.select_sql.format(column='`g`')} FROM `{table}` "
                         "ORDER BY id")
    values, _ = convert(pa.array([r[0] for r in rows], pa.binary()), mapped, "g")
    assert values.to_pylist()[-2:] == [Decimal("4.50"), None]
    scratch.query(f"ALTER TABLE `{table}` DROP COLUMN g")


# --- (d) conversion errors name the column and the value ---------------------------------------


@pytest.mark.parametrize(("column_type", "override", "raw", "shown"), [
    ("int(11)", None, b"99999999999999999999", "'99999999999999999999'"),
    ("decimal(5,2)", None, b"1234.56", "'1234.56'"),
    ("date", None, b"garbage!!!", "'garbage!!!'"),
    ("datetime", None, b"2020-13-45 99:00:00", "'2020-13-45 99:00:00'"),
    ("tinyint(1)", "bool", b"7", "'7'"),
    ("varchar(5)", None, b"\xc3(", "'\\xc3('"),
])
def test_value_errors(column_type: str, override: str | None, raw: bytes, shown: str) -> None:
    mapped = map_column(column(column_type), override)
    with pytest.raises(ValueConversionError) as info:
        convert(pa.array([b"1" if "int" in column_type else None, raw], pa.binary()), mapped,
                "Fecha Alta")
    assert "'Fecha Alta'" in str(info.value)
    assert shown in str(info.value)


def test_convert_accepts_empty_and_all_null() -> None:
    for column_type, _ in typemap.DOC_EXAMPLES:
        try:
            mapped = map_column(column(column_type))
        except TypeMappingError:
            continue
        for raw in (pa.array([], pa.binary()), pa.array([None, None], pa.binary())):
            values, fixes = convert(raw, mapped, "c")
            assert values.type == mapped.arrow_type and values.null_count == len(raw)
            assert fixes == {}


def test_decimal256_goes_to_duckdb_as_exact_text() -> None:
    mapped = map_column(column("decimal(65,30)"))
    text = "-12345678901234567890123456789012345.123456789012345678901234567891"
    values, _ = convert(pa.array([text.encode()], pa.binary()), mapped, "c")
    assert values.to_pylist() == [Decimal(text)]
    assert local_array(values).to_pylist() == [text]
