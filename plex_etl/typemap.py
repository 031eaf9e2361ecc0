"""How every MySQL/MariaDB column becomes an Arrow, BigQuery and DuckDB value: the one place.

Three steps, all driven by the tables below:

1. `map_column(column, override)` parses the column's COLUMN_TYPE (`int(11) unsigned`,
   `decimal(15,4)`, `datetime(6)`...) and looks its DATA_TYPE up in `_TYPES` (data type ->
   family) and `_FAMILIES` (family -> default target + the plan overrides it accepts). The
   result, `MappedType`, names the Arrow type the extractor produces (an `ArrowType`,
   built only where data is converted), the BigQuery and DuckDB column types, the SELECT
   expression that normalises the value server-side (`select_sql`, a template with
   `{column}`) and the conversion `rule`.
2. The extractor reads rows through the binary protocol (extract/_binary.c): integers,
   doubles, DECIMAL(p<=38) and calendar dates/timestamps arrive already as the Arrow
   value that step 3 gives for their text (extract/stream.py, `column_kinds`); every
   other value arrives as the bytes of MySQL's canonical text form (utf8mb4 for text
   columns, raw bytes for binary ones; numbers, dates and times printed as the text
   protocol prints them) or NULL, one binary array per column.
3. `convert(raw, mapped, column)` runs the rule's vectorised converter (pyarrow.compute
   casts; JSON validation is the one per-value loop) and returns the typed array plus the
   count of every normalising fix applied (names and meaning in `FIXES`). A value that
   cannot be represented without silent loss raises `ValueConversionError`: a fix is
   either counted or an error, never silent.

How reconciliation spells each landed value to compare it with MySQL's lives beside this module,
in plex_etl/canonical.py.

Decisions (docs/type-mapping.md explains them at more length; its table comes from
`markdown_table()`):
- Integers -> INT64, except BIGINT UNSIGNED (up to 2^64-1) -> NUMERIC(20, 0) /
  decimal128(20, 0) / DuckDB DECIMAL(20,0). Override "int64" keeps INT64 and errors above
  2^63-1.
- TINYINT(1) is an integer unless the plan overrides it with "bool" (discovery samples the
  data and proposes the override when it only holds 0/1); with "bool" any other value
  raises ValueConversionError. MySQL's BOOLEAN is only an alias of TINYINT(1), so the
  catalog cannot tell a flag from a small number without looking at data.
- DECIMAL(p,s) -> NUMERIC(p, s) when s <= 9 and p-s <= 29, else BIGNUMERIC(p, s) when
  p-s <= 38 (s is at most 38 in MariaDB, 30 in MySQL), else STRING holding the exact text.
  Arrow decimal128 for p <= 38, decimal256 above. DuckDB DECIMAL stops at 38 digits, so
  such columns are VARCHAR locally and the local warehouse stages them as exact text
  (warehouse/local.py, `_staging_type`).
- FLOAT is read as `CAST(col AS DOUBLE)`: the text protocol prints FLOAT with 6
  significant digits only, the cast gives the exact float32 value. DOUBLE text is the
  shortest round-trip repr, parsed with correct rounding: both are exact.
- BIT(1) -> BOOL, BIT(n<=63) -> INT64, BIT(64) -> NUMERIC(20, 0); read as `col + 0`.
- DATE/DATETIME/TIMESTAMP: MySQL's zero date ('0000-00-00'), partially zero dates
  ('2020-00-15'), year 0000 (below BigQuery's 0001-01-01) and calendar-invalid dates (only
  storable with ALLOW_INVALID_DATES, e.g. '2020-02-31') become NULL, each counted under
  its own fix name. TIMESTAMP text is UTC because `raw_connection` sets the session zone
  to +00:00; the converter relies on it.
- TIME -> STRING in MySQL's canonical text ('-838:59:59.500000' style, the fsp digits
  the column has): TIME is a duration of up to +-838 hours, no BigQuery type holds it
  losslessly and the system being replaced wrote strings.
- YEAR -> INT64, YEAR 0000 (MySQL's zero year) -> NULL counted. YEAR(2) prints two
  ambiguous digits: STRING with that text (override "int64" is refused).
- JSON (MySQL `json`, or a MariaDB LONGTEXT with override "json") -> BigQuery JSON, DuckDB
  JSON, Arrow string; every value is checked with `json.loads` (a per-value loop: JSON
  has no vectorised validator in pyarrow).
- Spatial types -> STRING with WKT via `ST_AsText` (override "bytes" gives WKB via
  `ST_AsBinary`). MariaDB UUID/INET4/INET6 -> STRING in their text form.
- Text types -> STRING whatever their charset (the server converts to utf8mb4); a
  binary-charset text column and the BINARY/BLOB types -> BYTES, unchanged (BINARY(n)
  keeps its 0x00 padding, CHAR(n) arrives without trailing spaces as MySQL returns it).
  Override "bytes" on text reads the stored bytes in the column's own charset.
- Generated columns map like their type. An unknown type raises TypeMappingError.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from plex_etl.catalog.model import Column

if TYPE_CHECKING:
    import pyarrow as pa

FIXES: dict[str, str] = {
    "zero_date_to_null": "MySQL zero date/datetime/timestamp ('0000-00-00 ...') loaded as NULL",
    "partial_zero_date_to_null": "date with a zero month or day (e.g. '2020-00-15') loaded as NULL",
    "year_zero_date_to_null": "date in year 0000, before BigQuery's 0001-01-01, loaded as NULL",
    "invalid_date_to_null": "calendar-invalid date kept by ALLOW_INVALID_DATES (e.g. '2020-02-31') "
    "loaded as NULL",
    "zero_year_to_null": "YEAR 0000 (MySQL's zero/invalid year) loaded as NULL",
    "rounded_to_float64": "with override float64: value not exactly representable, nearest "
    "float64 loaded",
}

RULES: dict[str, str] = {
    "integer": "decimal text parsed as int64; out of range is an error",
    "decimal": "exact decimal text parsed as decimal128/256(p, s); never rounded",
    "decimal_text": "exact decimal text kept as a string (too wide for BIGNUMERIC)",
    "float": "shortest round-trip double text parsed with correct rounding (exact)",
    "float64_rounded": "number text parsed as the nearest float64; counted when that float, "
    "rounded back to the column's scale, differs from the source value",
    "bool": "0/1 loaded as false/true; any other value is an error",
    "date": "'YYYY-MM-DD' parsed as date32; zero/partial/invalid dates counted as NULL",
    "datetime": "'YYYY-MM-DD hh:mm:ss[.f]' parsed as timestamp[us]; zero dates counted as NULL",
    "timestamp": "like datetime, read in the UTC session zone, typed timestamp[us, UTC]",
    "year": "four-digit year parsed as int64; 0000 counted as NULL",
    "text": "utf8mb4 text validated as UTF-8 and kept unchanged",
    "time_text": "MySQL TIME text ('-838:59:59.000000' .. '838:59:59.000000') kept unchanged",
    "spatial_wkt": "WKT text from ST_AsText kept unchanged",
    "bytes": "raw bytes kept unchanged",
    "json": "JSON text checked with json.loads and kept unchanged",
}


class TypeMappingError(ValueError):
    """A column's type (or its plan override) cannot be mapped; the message names both."""


class ValueConversionError(ValueError):
    """A value cannot be loaded without silent loss; the message names column and value."""


@dataclass(frozen=True)
class ArrowType:
    """A pyarrow type named by its factory and arguments: ArrowType("decimal128", (20, 0)) is
    pa.decimal128(20, 0), built by `build()`.

    Columns are mapped when the code location loads (plan validation, asset metadata):
    naming the type there and building it only where data is converted keeps pyarrow and
    numpy (~0.15 s) out of every Dagster process that moves no data.
    """

    factory: str  # a function of the pyarrow module: int64, decimal128, timestamp...
    args: tuple[int | str, ...] = ()

    def build(self) -> pa.DataType:
        import pyarrow as pa

        return getattr(pa, self.factory)(*self.args)


@dataclass(frozen=True)
class MappedType:
    """Where a column goes and how; `column_type` is an addition to the agreed API."""

    arrow: ArrowType  # the Arrow type the extractor produces; `arrow_type` builds it
    bigquery_type: str
    local_type: str  # DuckDB
    select_sql: str  # template with {column}: the already-quoted identifier
    rule: str  # key of RULES: how convert() turns the text protocol bytes into arrow_type
    column_type: str = ""  # the MySQL COLUMN_TYPE mapped (some rules need its parameters)

    @property
    def arrow_type(self) -> pa.DataType:
        return self.arrow.build()


# --- COLUMN_TYPE parsing ---------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    column: str
    data_type: str
    column_type: str
    params: tuple[int, ...]  # numeric parameters: (p, s) of decimal, fsp, bit width...
    unsigned: bool
    binary_charset: bool

    def describe(self) -> str:
        return f"column {self.column!r} of type {self.column_type or self.data_type!r}"


# Spellings information_schema never reports but a hand-written catalog might.
_ALIASES = {
    "integer": "int", "int1": "tinyint", "int2": "smallint", "int3": "mediumint",
    "int4": "int", "int8": "bigint", "middleint": "mediumint", "bool": "tinyint",
    "boolean": "tinyint", "dec": "decimal", "numeric": "decimal", "fixed": "decimal",
    "real": "double", "double precision": "double", "float4": "float", "float8": "double",
    "geomcollection": "geometrycollection", "character": "char", "long varchar": "mediumtext",
}

_PARAMS = re.compile(r"^[^(]*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def _spec(column: Column) -> _Spec:
    data_type = " ".join(column.data_type.lower().split())
    data_type = _ALIASES.get(data_type, data_type)
    column_type = column.column_type.strip()
    params: tuple[int, ...] = ()
    # enum('1','2') and set(...) have string parameters, not numbers: never parse them.
    if data_type not in ("enum", "set"):
        match = _PARAMS.match(column_type)
        if match:
            params = tuple(int(g) for g in match.groups() if g is not None)
    if column.data_type.lower() in ("bool", "boolean") and not params:
        params = (1,)
    return _Spec(
        column=column.name,
        data_type=data_type,
        column_type=column_type,
        params=params,
        unsigned=" unsigned" in f" {column_type.lower()}",
        binary_charset=(column.charset or "").lower() == "binary",
    )


# --- targets: the warehouse side of a mapping ----------------------------------------------

_PLAIN = "{column}"


def _int64(select: str = _PLAIN, rule: str = "integer") -> MappedType:
    return MappedType(ArrowType("int64"), "INT64", "BIGINT", select, rule)


def _bool(select: str = _PLAIN) -> MappedType:
    return MappedType(ArrowType("bool_"), "BOOL", "BOOLEAN", select, "bool")


def _float64(select: str = _PLAIN, rule: str = "float") -> MappedType:
    return MappedType(ArrowType("float64"), "FLOAT64", "DOUBLE", select, rule)


def _string(select: str = _PLAIN, rule: str = "text") -> MappedType:
    return MappedType(ArrowType("string"), "STRING", "VARCHAR", select, rule)


def _bytes(select: str = _PLAIN) -> MappedType:
    return MappedType(ArrowType("binary"), "BYTES", "BLOB", select, "bytes")


def _json() -> MappedType:
    return MappedType(ArrowType("string"), "JSON", "JSON", _PLAIN, "json")


def _fits_numeric(p: int, s: int) -> bool:
    return s <= 9 and p - s <= 29


def _fits_bignumeric(p: int, s: int) -> bool:
    return s <= 38 and p - s <= 38


def _decimal(p: int, s: int, bigquery: str, select: str = _PLAIN) -> MappedType:
    """An exact decimal; `bigquery` is "NUMERIC" or "BIGNUMERIC" (caller checked the fit)."""
    arrow = ArrowType("decimal128" if p <= 38 else "decimal256", (p, s))
    # DuckDB DECIMAL holds at most 38 digits: wider values go as exact text (the local warehouse stages them so).
    local = f"DECIMAL({p},{s})" if p <= 38 else "VARCHAR"
    return MappedType(arrow, f"{bigquery}({p}, {s})", local, select, "decimal")


# --- families: defaults and accepted overrides -----------------------------------------

_BIT = "{column} + 0"  # BIT arrives as raw big-endian bytes; + 0 prints it as a number
_FLOAT = "CAST({column} AS DOUBLE)"  # FLOAT text has 6 digits; as DOUBLE it is exact


def _decimal_params(spec: _Spec) -> tuple[int, int]:
    p = spec.params[0] if spec.params else 10  # MySQL's defaults: DECIMAL = DECIMAL(10,0)
    s = spec.params[1] if len(spec.params) > 1 else 0
    return p, s


def _integer_default(spec: _Spec) -> MappedType:
    if spec.data_type == "bigint" and spec.unsigned:
        return _decimal(20, 0, "NUMERIC")
    return _int64()


def _decimal_default(spec: _Spec) -> MappedType:
    p, s = _decimal_params(spec)
    if _fits_numeric(p, s):
        return _decimal(p, s, "NUMERIC")
    if _fits_bignumeric(p, s):
        return _decimal(p, s, "BIGNUMERIC")
    return _string(rule="decimal_text")


def _bit_width(spec: _Spec) -> int:
    return spec.params[0] if spec.params else 1


def _bit_default(spec: _Spec) -> MappedType:
    width = _bit_width(spec)
    if width == 1:
        return _bool(_BIT)
    if width <= 63:
        return _int64(_BIT)
    return _decimal(20, 0, "NUMERIC", _BIT)


def _year_default(spec: _Spec) -> MappedType:
    if spec.params and spec.params[0] == 2:
        # '05' may be 2005 or 1905 (and '00' the zero year): keep the text MySQL shows.
        return _string()
    return _int64(rule="year")


def _text_default(spec: _Spec) -> MappedType:
    return _bytes() if spec.binary_charset else _string()


def _fixed(mapped: MappedType) -> Callable[[_Spec], MappedType]:
    return lambda _spec: mapped


@dataclass(frozen=True)
class _Family:
    default: Callable[[_Spec], MappedType]
    overrides: frozenset[str]  # plan overrides accepted (restating its own type included)
    select: str = _PLAIN  # server-side normalisation reused by overrides


_NUMBER_OVERRIDES = frozenset({"bool", "int64", "numeric", "bignumeric", "float64", "string"})

_FAMILIES: dict[str, _Family] = {
    "integer": _Family(_integer_default, _NUMBER_OVERRIDES),
    "bit": _Family(_bit_default, _NUMBER_OVERRIDES | {"bytes"}, _BIT),
    "decimal": _Family(_decimal_default, _NUMBER_OVERRIDES - {"bool"}),
    "float": _Family(_fixed(_float64(_FLOAT)), frozenset({"float64", "string"}), _FLOAT),
    "double": _Family(_fixed(_float64()), frozenset({"float64", "string"})),
    "date": _Family(
        _fixed(MappedType(ArrowType("date32"), "DATE", "DATE", _PLAIN, "date")), frozenset({"string"})
    ),
    "datetime": _Family(
        _fixed(MappedType(ArrowType("timestamp", ("us",)), "DATETIME", "TIMESTAMP", _PLAIN, "datetime")),
        frozenset({"string"}),
    ),
    "timestamp": _Family(
        _fixed(MappedType(ArrowType("timestamp", ("us", "UTC")), "TIMESTAMP", "TIMESTAMPTZ",
                          _PLAIN, "timestamp")),
        frozenset({"string"}),
    ),
    "time": _Family(_fixed(_string(rule="time_text")), frozenset({"string"})),
    "year": _Family(_year_default, frozenset({"int64", "string"})),
    "text": _Family(_text_default, frozenset({"string", "json", "bytes"})),
    "binary": _Family(_fixed(_bytes()), frozenset({"bytes", "string"})),
    "enum": _Family(_fixed(_string()), frozenset({"string"})),
    "json": _Family(_fixed(_json()), frozenset({"json", "string"})),
    "spatial": _Family(_fixed(_string("ST_AsText({column})", "spatial_wkt")),
                       frozenset({"string", "bytes"}), "ST_AsText({column})"),
    "textual": _Family(_fixed(_string()), frozenset({"string"})),  # uuid, inet4, inet6
}

# DATA_TYPE -> family: the list of every type MySQL 8 and MariaDB 10.11 report.
_TYPES: dict[str, str] = {
    **dict.fromkeys(("tinyint", "smallint", "mediumint", "int", "bigint"), "integer"),
    "decimal": "decimal",
    "float": "float",
    "double": "double",
    "bit": "bit",
    "date": "date",
    "datetime": "datetime",
    "timestamp": "timestamp",
    "time": "time",
    "year": "year",
    **dict.fromkeys(
        ("char", "varchar", "tinytext", "text", "mediumtext", "longtext"), "text"
    ),
    **dict.fromkeys(
        ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"), "binary"
    ),
    "enum": "enum",
    "set": "enum",
    "json": "json",
    **dict.fromkeys(
        ("geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
         "multipolygon", "geometrycollection"),
        "spatial",
    ),
    **dict.fromkeys(("uuid", "inet4", "inet6"), "textual"),
}

# What override "bytes" reads: WKB for spatial values, the stored bytes in the column's
# own charset for text (not the utf8mb4 conversion), raw big-endian bytes for BIT.
_BYTES_SELECT = {"spatial": "ST_AsBinary({column})", "text": "CAST({column} AS BINARY)"}

OVERRIDES = ("bool", "int64", "float64", "numeric", "bignumeric", "string", "bytes", "json")


def _override(spec: _Spec, family: str, override: str) -> MappedType:
    select = _FAMILIES[family].select
    if override == "string":
        if family in ("float", "double"):
            # The server's text of the double: the binary protocol would send its 8 bytes.
            select = "CAST(" + select + " AS CHAR)"
        return _string(select)
    if override == "bytes":
        return _bytes(_BYTES_SELECT.get(family, _PLAIN))
    if override == "json":
        return _json()
    if override == "bool":
        return _bool(select)
    if override == "float64":
        return _float64(select, "float" if family in ("float", "double") else "float64_rounded")
    if family == "year":  # int64 is YEAR's own type; YEAR(2) digits are not a year
        if spec.params and spec.params[0] == 2:
            raise TypeMappingError(f"{spec.describe()}: YEAR(2) has two ambiguous digits")
        return _year_default(spec)
    p, s = _decimal_params(spec) if family == "decimal" else (20, 0)
    if override == "int64":
        if s:
            raise TypeMappingError(f"{spec.describe()}: a scale > 0 cannot be loaded as int64")
        return _int64(select)
    fits = _fits_numeric if override == "numeric" else _fits_bignumeric
    if not fits(p, s):
        raise TypeMappingError(f"{spec.describe()}: DECIMAL({p},{s}) does not fit {override}")
    return _decimal(p, s, override.upper(), select)


def map_column(column: Column, override: str | None = None) -> MappedType:
    """The mapping of one catalog column, with the plan file's type override if any."""
    spec = _spec(column)
    family = _TYPES.get(spec.data_type)
    if family is None:
        raise TypeMappingError(f"{spec.describe()}: unknown MySQL type {spec.data_type!r}")
    if override is None:
        mapped = _FAMILIES[family].default(spec)
    else:
        name = override.strip().lower()
        if name not in OVERRIDES:
            raise TypeMappingError(
                f"{spec.describe()}: unknown type override {override!r} "
                f"(known: {', '.join(OVERRIDES)})"
            )
        if name not in _FAMILIES[family].overrides:
            raise TypeMappingError(
                f"{spec.describe()}: override {override!r} is not possible for this type "
                f"(possible: {', '.join(sorted(_FAMILIES[family].overrides))})"
            )
        mapped = _override(spec, family, name)
    return replace(mapped, column_type=spec.column_type)


# --- conversion ------------------------------------------------------------------------------
# pyarrow (and numpy) are imported by the functions that convert data, not by this module:
# loading the code location maps every column but converts none (see ArrowType).

Converter = Callable[["pa.Array", MappedType, str], tuple["pa.Array", dict[str, int]]]
_CONVERTERS: dict[str, Converter] = {}


def _converter(*rules: str) -> Callable[[Converter], Converter]:
    def register(function: Converter) -> Converter:
        for rule in rules:
            _CONVERTERS[rule] = function
        return function

    return register


def _show(value: object) -> str:
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode("utf-8")
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _error(column: str, value: object, target: str, reason: str = "") -> ValueConversionError:
    why = f" ({reason})" if reason else ""
    return ValueConversionError(f"column {column!r}: value {_show(value)} cannot be loaded as "
                                f"{target}{why}")


def _first_value(values: pa.Array, mask: pa.Array) -> object:
    return values.filter(mask)[0].as_py()


def _cast(values: pa.Array, target: pa.DataType, column: str) -> pa.Array:
    """pc.cast, and on failure a ValueConversionError naming the first failing value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        # Error path only: find the culprit value by value.
        for value in values:
            try:
                pc.cast(pa.array([value.as_py()], values.type), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as inner:
                raise _error(column, value.as_py(), str(target), str(inner)) from None
        raise _error(column, "?", str(target), str(exc)) from None


def _count(fixes: dict[str, int], name: str, mask: pa.Array) -> None:
    import pyarrow.compute as pc

    n = pc.sum(mask).as_py() or 0
    if n:
        fixes[name] = fixes.get(name, 0) + n


def _null_where(values: pa.Array, mask: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(mask, pa.scalar(None, values.type), values)


@_converter("integer", "decimal", "float")
def _convert_number(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    # Text protocol numbers are canonical and exact; casts fail loudly on overflow/precision.
    return _cast(raw, mapped.arrow_type, column), {}


@_converter("bool")
def _convert_bool(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    ints = _cast(raw, pa.int64(), column)
    bad = pc.invert(pc.is_in(ints, pa.array([0, 1], pa.int64())))
    if pc.any(pc.and_(bad, pc.is_valid(ints))).as_py():
        raise _error(column, _first_value(raw, pc.and_(bad, pc.is_valid(ints))), "bool",
                     "only 0 and 1 are booleans")
    return pc.not_equal(ints, 0), {}


@_converter("float64_rounded")
def _convert_float64_rounded(raw: pa.Array, mapped: MappedType, column: str
                             ) -> tuple[pa.Array, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    floats = _cast(raw, pa.float64(), column)
    fixes: dict[str, int] = {}
    # Exact iff the float, written back at the source's scale, is the source value.
    # Only DECIMAL(p,s) (and its aliases) has a scale; int(11) and bit(10) have none.
    params = _PARAMS.match(mapped.column_type)
    scale = int(params.group(2)) if params and params.group(2) else 0
    exact = _cast(raw, pa.decimal256(76, scale), column)
    back = pc.cast(floats, pa.decimal256(76, scale), safe=False)
    _count(fixes, "rounded_to_float64", pc.not_equal(exact, back))
    return floats, fixes


_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _invalid_calendar_dates(text: pa.Array) -> pa.Array:
    """Values shaped like a date whose day does not exist in its month (vectorised)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    shaped = pc.match_substring_regex(text, r"^\d{4}-\d{2}-\d{2}")
    text = _null_where(text, pc.invert(shaped))
    y, m, d = (
        pc.cast(pc.utf8_slice_codeunits(text, a, b), pa.int64()).to_numpy(zero_copy_only=False)
        for a, b in ((0, 4), (5, 7), (8, 10))
    )
    valid = ~np.isnan(y)
    y, m, d = (np.nan_to_num(v).astype(np.int64) for v in (y, m, d))
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_ok = (m >= 1) & (m <= 12)
    dim = np.array(_DAYS_IN_MONTH)[np.where(month_ok, m, 0)] + ((m == 2) & leap)
    return pa.array(valid & month_ok & (d > dim))


@_converter("date", "datetime", "timestamp")
def _convert_temporal(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = raw.view(pa.string())
    fixes: dict[str, int] = {}
    year0 = pc.starts_with(text, "0000")
    # match_substring on the two-byte slice, not equal(..., b"00"): a Python value handed to a
    # compute function becomes an Arrow scalar, and pyarrow imports pandas for that (+37 MB in
    # every extraction process). Same test: a slice holds "00" only when it is "00".
    month0 = pc.match_substring(pc.binary_slice(raw, 5, 7), "00")
    day0 = pc.match_substring(pc.binary_slice(raw, 8, 10), "00")
    suspicious = pc.or_(year0, pc.or_(month0, day0))
    if pc.any(suspicious).as_py():  # rare: classify only then
        zero = pc.and_(year0, pc.and_(month0, day0))
        partial = pc.and_not(pc.or_(month0, day0), zero)
        _count(fixes, "zero_date_to_null", zero)
        _count(fixes, "partial_zero_date_to_null", partial)
        _count(fixes, "year_zero_date_to_null", pc.and_not(year0, pc.or_(zero, partial)))
        text = _null_where(text, suspicious)
    naive = pa.date32() if mapped.rule == "date" else pa.timestamp("us")
    try:
        values = pc.cast(text, naive)
    except pa.ArrowInvalid:
        # Only ALLOW_INVALID_DATES data gets here ('2020-02-31'); anything else is an error.
        invalid = _invalid_calendar_dates(text)
        _count(fixes, "invalid_date_to_null", invalid)
        values = _cast(_null_where(text, invalid), naive, column)
    # TIMESTAMP text is in the session zone, which raw_connection sets to UTC.
    return values.cast(mapped.arrow_type), fixes


@_converter("year")
def _convert_year(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    years = _cast(raw, pa.int64(), column)
    fixes: dict[str, int] = {}
    zero = pc.equal(years, 0)
    _count(fixes, "zero_year_to_null", zero)
    return (_null_where(years, zero) if fixes else years), fixes


@_converter("text", "time_text", "spatial_wkt", "decimal_text")
def _convert_text(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa

    return _cast(raw, pa.string(), column), {}  # the cast validates UTF-8


@_converter("bytes")
def _convert_bytes(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa

    return raw.cast(pa.binary()), {}


@_converter("json")
def _convert_json(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict]:
    import pyarrow as pa

    text = _cast(raw, pa.string(), column)
    # Per-value loop: pyarrow has no JSON validator, and BigQuery rejects a whole load
    # for one invalid document (possible in a LONGTEXT overridden as json).
    for value in text.drop_null().to_pylist():
        try:
            json.loads(value)
        except ValueError as exc:
            raise _error(column, value, "JSON", str(exc)) from None
    return text, {}


def convert(raw: pa.Array, mapped: MappedType, column: str) -> tuple[pa.Array, dict[str, int]]:
    """Text protocol bytes (binary array) -> array of `mapped.arrow_type`, and the fixes applied.

    Raises ValueConversionError (naming `column` and the value) for a value that cannot be
    represented without silent loss.
    """
    import pyarrow as pa

    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if raw.type != pa.binary():
        raw = raw.cast(pa.binary())
    values, fixes = _CONVERTERS[mapped.rule](raw, mapped, column)
    assert values.type == mapped.arrow_type, (values.type, mapped)
    return values, fixes


# --- documentation -----------------------------------------------------------------------

# One row per MySQL type (and per parameter range that changes the mapping).
DOC_EXAMPLES: tuple[tuple[str, str | None], ...] = (
    ("tinyint(4)", None), ("tinyint(3) unsigned", None), ("tinyint(1)", None),
    ("tinyint(1)", "bool"), ("smallint(6)", None), ("smallint(5) unsigned", None),
    ("mediumint(9)", None), ("mediumint(8) unsigned", None), ("int(11)", None),
    ("int(10) unsigned", None), ("bigint(20)", None), ("bigint(20) unsigned", None),
    ("bigint(20) unsigned", "int64"), ("decimal(15,4)", None), ("decimal(38,9)", None),
    ("decimal(40,10)", None), ("decimal(65,30)", None), ("decimal(65,0)", None),
    ("decimal(15,4)", "float64"), ("float", None), ("double", None), ("bit(1)", None),
    ("bit(10)", None), ("bit(64)", None), ("date", None), ("datetime", None),
    ("datetime(6)", None), ("timestamp", None), ("timestamp(3)", None), ("time", None),
    ("time(6)", None), ("year(4)", None), ("year(2)", None), ("char(10)", None),
    ("varchar(255)", None), ("tinytext", None), ("text", None), ("mediumtext", None),
    ("longtext", None), ("longtext", "json"), ("binary(16)", None), ("varbinary(255)", None),
    ("tinyblob", None), ("blob", None), ("mediumblob", None), ("longblob", None),
    ("enum('a','b')", None), ("set('a','b')", None), ("json", None), ("geometry", None),
    ("point", None), ("linestring", None), ("polygon", None), ("multipoint", None),
    ("multilinestring", None), ("multipolygon", None), ("geometrycollection", None),
    ("point", "bytes"), ("uuid", None), ("inet4", None), ("inet6", None),
)

_RULE_FIXES: dict[str, tuple[str, ...]] = {
    "date": ("zero_date_to_null", "partial_zero_date_to_null", "year_zero_date_to_null",
             "invalid_date_to_null"),
    "year": ("zero_year_to_null",),
    "float64_rounded": ("rounded_to_float64",),
}
_RULE_FIXES["datetime"] = _RULE_FIXES["timestamp"] = _RULE_FIXES["date"]


def rule_fixes(rule: str) -> tuple[str, ...]:
    """The FIXES a rule may count."""
    return _RULE_FIXES.get(rule, ())


def _example_column(column_type: str) -> Column:
    data_type = column_type.split("(")[0].split()[0]
    return Column(name="c", ordinal=1, column_type=column_type, data_type=data_type,
                  nullable=True)


def markdown_table(examples: Iterable[tuple[str, str | None]] = DOC_EXAMPLES) -> str:
    """The type table of docs/type-mapping.md, computed by map_column (docs cannot drift)."""
    lines = [
        "| MySQL COLUMN_TYPE | plan override | SELECT | Arrow | BigQuery | DuckDB | rule | fixes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for column_type, override in examples:
        m = map_column(_example_column(column_type), override)
        fixes = ", ".join(f"`{f}`" for f in rule_fixes(m.rule)) or "-"
        lines.append(
            f"| `{column_type}` | {override or '-'} | `{m.select_sql}` | `{m.arrow_type}` "
            f"| `{m.bigquery_type}` | `{m.local_type}` | {m.rule} | {fixes} |"
        )
    return "\n".join(lines) + "\n"


def markdown_rules() -> str:
    """The rules and fixes tables of docs/type-mapping.md."""
    lines = ["| rule | conversion |", "| --- | --- |"]
    lines += [f"| {name} | {text} |" for name, text in RULES.items()]
    lines += ["", "| fix | meaning |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in FIXES.items()]
    return "\n".join(lines) + "\n"
