"""The canonical text of every replicated value: what reconciliation hashes, on both sides.

Reconciliation (plex_etl/reconcile.py) proves that the warehouse holds MySQL's values without
moving rows: MySQL and the warehouse each compute, per day, the sum of a hash of every row's
canonical text, and only those figures travel. For the sums to agree, each value must be
spelled the same by MySQL's SQL (on the MySQL value) and by the warehouse's SQL (DuckDB,
BigQuery; on what `typemap` landed). This module is that spelling, per type, in the three
dialects; docs/type-mapping.md ("Canonical text") shows it (`markdown_table`).

A row's text is `CONCAT_WS('|', null flags, fields of each column in catalog order)`:
- the null flags are integers with one bit per column that can be NULL in MySQL or give no
  field (60 columns per integer), set when the value is NULL, so that a NULL, an empty string
  and a zero never spell alike (a NULL in a NOT NULL column drops its fields: a shorter text);
- each column gives one or more fields (below), NULL when the value is NULL (CONCAT_WS skips
  them); text is preceded by its length in characters, so a '|' inside a value cannot move a
  field boundary.

The fields, by kind (`KINDS`):
- integers: the decimal text;
- decimals: the exact decimal text without trailing fractional zeros ('12.5', '0', '-0.0001');
  BigQuery prints NUMERIC so already, MySQL and DuckDB print the column's scale;
- floats: two integers `e` and `m` with x = m * 2^(e - 53) exactly, e = floor(log2(0.7071 * abs(x)))
  (|m| < 2^55; zero gives no field, the null flags tell it from NULL). No printed form of a double
  is shared: BigQuery prints 15 or 17 digits, MySQL and DuckDB the shortest round trip, each
  with its own exponent notation; powers of two cost nothing. The factor 0.7071 puts the
  boundary between two values of `e` away from powers of two, where engines' log2 differ in the
  last bit: there, and only within 1e-13 of 2^k * 1.41423 (a value no one types), two engines
  could pick different `e` for the same value, a false difference, never a missed one;
- booleans: 0 or 1;
- DATE: 'YYYY-MM-DD'; DATETIME and TIMESTAMP: microseconds since 1970-01-01 00:00:00 (DATETIME
  as its wall-clock value in the source's time zone, TIMESTAMP in UTC: both sessions run in
  UTC). The MySQL side applies the type map's fix to zero and invalid dates (`x + INTERVAL 0
  DAY` is NULL for exactly the values typemap loads as NULL), so a fixed row compares equal;
- YEAR: the year, 0000 as NULL (the type map's fix);
- text (CHAR/VARCHAR/TEXT, ENUM, SET, TIME, WKT, wide DECIMAL kept as text, UUID...): length
  and the text as UTF-8, whatever the MySQL charset (latin1 is compared as what lands);
- binary (BLOB, BINARY, BIT or text overridden as bytes): the MD5 of the bytes, lower-case hex;
- JSON: the text, where the warehouse keeps MySQL's text (DuckDB); on BigQuery only whether it
  is NULL (`null_only`): BigQuery re-encodes documents (keys sorted, numbers re-printed, wide
  numbers rounded), which MySQL's SQL cannot reproduce. Reconciliation names such columns.

Hashes: MD5 of the text; a day's figure is the SUM of the hashes' first 60 bits (an exact
integer on every engine), so rows can come in any order and a duplicate never cancels out.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from plex_etl.catalog.model import Column
from plex_etl.typemap import MappedType

DIALECTS = ("mysql", "duckdb", "bigquery")
FLAG_BITS = 60  # null flags per integer
HASH_HEX = 15  # hex digits of MD5 summed: 60 bits
EPOCH_DAYS = 719528  # MySQL's TO_DAYS('1970-01-01')

KINDS: dict[str, str] = {
    "integer": "decimal text",
    "decimal": "exact decimal text, no trailing fractional zeros",
    "float": "e and m: x = m * 2^(e - 53), e = floor(log2(0.7071 * abs(x))); zero: no field",
    "bool": "0 or 1",
    "date": "YYYY-MM-DD; zero and invalid dates NULL (typemap's fix)",
    "datetime": "microseconds since 1970-01-01 (wall clock); zero and invalid dates NULL",
    "timestamp": "microseconds since 1970-01-01 UTC; zero timestamp NULL",
    "year": "the year; 0000 NULL",
    "text": "length in characters, then the UTF-8 text",
    "bytes": "MD5 of the bytes, lower-case hex",
    "null_only": "nothing but whether the value is NULL (JSON on BigQuery)",
}

_UTF8 = ("utf8mb4", "utf8mb3", "utf8")


@dataclass(frozen=True)
class Canonical:
    kind: str  # a key of KINDS
    scale: int = 0  # decimals: digits after the point in the MySQL and DuckDB text
    # MySQL text not in UTF-8: "text" converts the text to utf8mb4 (its CHAR_LENGTH is already
    # the count of characters), "bytes" also counts characters after converting (binary strings).
    convert: str = ""


_SCALE = re.compile(r"\(\s*\d+\s*,\s*(\d+)\s*\)")
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit"})


def _scale(type_name: str) -> int:
    match = _SCALE.search(type_name)
    return int(match.group(1)) if match else 0


def canonical(column: Column, mapped: MappedType, warehouse: str) -> Canonical:
    """How a column's values are compared, from its type map (the rule and the landed type)."""
    rule = mapped.rule
    if rule in ("integer", "float", "bool", "date", "datetime", "timestamp", "year", "bytes"):
        return Canonical(rule)
    if rule == "float64_rounded":
        return Canonical("float")
    if rule == "decimal":
        return Canonical("decimal", _scale(mapped.bigquery_type))
    if rule == "decimal_text":  # wider than BIGNUMERIC: MySQL's text in both
        return Canonical("decimal", _scale(mapped.column_type))
    if rule == "json" and warehouse == "bigquery":
        return Canonical("null_only")
    charset = (column.charset or "").lower()
    if charset == "binary" or column.data_type.lower() in _BINARY_TYPES:
        return Canonical("text", convert="bytes")
    return Canonical("text", convert="" if charset in _UTF8 else "text")


@dataclass(frozen=True)
class CanonicalColumn:
    name: str  # the warehouse column
    source: str  # the MySQL value: the type map's select expression on the read's alias
    canonical: Canonical
    nullable: bool = True  # MySQL's: a NOT NULL column needs no null flag unless its kind does

    @property
    def flagged(self) -> bool:
        """Whether the row text carries this column's null flag: it can be NULL in MySQL, or a
        value of it can give no field (float zero) or become NULL by a type map fix."""
        return self.nullable or self.canonical.kind in ("float", "date", "datetime", "timestamp", "year",
                                                          "null_only")


@dataclass(frozen=True)
class Coverage:
    """Which days' values a comparison hashes (counts and keys are compared on every day).

    `cycle` 1: every day. Otherwise the days whose number (days since 1970-01-01) modulo `cycle`
    is `phase`, and every day from `recent` on: run daily with phase = today's number, each day's
    values are compared at least once every `cycle` days."""

    cycle: int = 1
    phase: int = 0
    recent: dt.date | None = None

    @classmethod
    def rolling(cls, cycle: int, today: dt.date, recent: dt.date) -> Coverage:
        return cls(1) if cycle <= 1 else cls(cycle, _day_number(today) % cycle, recent)

    @property
    def whole(self) -> bool:
        return self.cycle <= 1

    def describe(self, today: dt.date) -> str:
        if self.whole:
            return "every day"
        return (f"1 day in {self.cycle} (this run: the days numbered {self.phase} modulo {self.cycle} since "
                f"1970-01-01) and every day from {self.recent}; all days' values by "
                f"{today + dt.timedelta(days=self.cycle - 1)}")


def _day_number(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


@dataclass(frozen=True)
class RowDigest:
    """What a comparison hashes: the key columns (the row's identity) and every replicated
    column (the row's values), each with its canonical spelling."""

    key: tuple[CanonicalColumn, ...]
    columns: tuple[CanonicalColumn, ...]
    coverage: Coverage = Coverage()

    @property
    def weak(self) -> tuple[str, ...]:
        """Columns compared by NULL-ness only."""
        return tuple(c.name for c in self.columns if c.canonical.kind == "null_only")


@dataclass(frozen=True)
class Scope:
    """The rows a digest query reads and how it groups them: `day` None is the whole table
    grouped by day; otherwise that day's rows grouped by the first `digits` hex digits of the
    key hash (0: one group), only keys whose hash starts with one of `within` (empty: all)."""

    day: dt.date | None = None
    digits: int = 0
    within: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# The dialects. A value expression `v` is MySQL's select expression or a warehouse column.


def _text(dialect: str, v: str) -> str:
    return {"mysql": v, "duckdb": f"CAST({v} AS VARCHAR)", "bigquery": f"CAST({v} AS STRING)"}[dialect]


def _if(dialect: str, condition: str, then: str, otherwise: str) -> str:
    if dialect == "duckdb":
        return f"CASE WHEN {condition} THEN {then} ELSE {otherwise} END"
    return f"IF({condition}, {then}, {otherwise})"


def _float(dialect: str, v: str) -> list[str]:
    """e = floor(log2(0.7071 |x|)) and m = x / 2^(e - 53), an exact integer below 2^55 (x's
    53-bit mantissa times 2 or 4). Zero gives neither (log2 of 0 is NULL)."""
    if dialect == "mysql":  # MySQL evaluates each of these for every value: as few steps as possible
        e = f"FLOOR(LOG2(ABS({v}) * 0.7071e0))"
        return [e, f"CAST({v} / POW(2, GREATEST({e}, -1021) - 53) AS SIGNED)"]
    integer = "BIGINT" if dialect == "duckdb" else "INT64"
    nonzero = f"ABS(NULLIF({v}, 0)) * 0.7071e0"
    e = f"CAST(FLOOR({f'log2({nonzero})' if dialect == 'duckdb' else f'LOG({nonzero}, 2)'}) AS {integer})"
    # Below 2^-1021 the divisor would underflow: subnormals are counted in units of 2^-1074.
    # (NULLIF: DuckDB's GREATEST skips a NULL where MySQL's and BigQuery's return NULL.)
    m = f"CAST(NULLIF({v}, 0) / POW(2, GREATEST({e}, -1021) - 53) AS {integer})"
    return [_text(dialect, e), _text(dialect, m)]


def _decimal(dialect: str, v: str, scale: int) -> str:
    if dialect == "mysql":
        return f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {v}))" if scale else v
    text = _text(dialect, v)
    if dialect == "duckdb":
        return f"rtrim(rtrim({text}, '0'), '.')" if scale else text
    # BigQuery prints NUMERIC without trailing zeros; its emulator with the column's scale.
    return f"IF(STRPOS({text}, '.') > 0, RTRIM(RTRIM({text}, '0'), '.'), {text})"


def field_count(c: CanonicalColumn) -> int:
    """How many fields a column's value gives (the same in every dialect)."""
    return len(_fields(c, "duckdb", "v"))


def _fields(c: CanonicalColumn, dialect: str, v: str | None) -> list[str]:
    """The fields of one value (NULL when the value is NULL), as text in the warehouses. `v`
    None: a column the warehouse table lacks, which has no field (as NULL)."""
    if v is None:
        return []
    kind, mysql = c.canonical.kind, dialect == "mysql"
    if kind in ("integer", "bool"):
        if kind == "bool" and not mysql:
            v = f"CAST({v} AS {'INTEGER' if dialect == 'duckdb' else 'INT64'})"
        return [_text(dialect, v)]
    if kind == "decimal":
        return [_decimal(dialect, v, c.canonical.scale)]
    if kind == "float":
        return _float(dialect, v)
    if kind == "date":
        return [f"{v} + INTERVAL 0 DAY" if mysql else _text(dialect, v)]
    if kind in ("datetime", "timestamp"):
        if mysql:
            return [f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {v} + INTERVAL 0 DAY)"]
        if dialect == "duckdb":
            return [_text(dialect, f"epoch_us({v})")]
        return [_text(dialect, f"UNIX_MICROS({v if kind == 'timestamp' else f'TIMESTAMP({v})'})")]
    if kind == "year":
        return [f"NULLIF({v} + 0, 0)" if mysql else _text(dialect, v)]
    if kind == "bytes":
        return [{"mysql": f"MD5({v})", "duckdb": f"md5({v})", "bigquery": f"TO_HEX(MD5({v}))"}[dialect]]
    if kind == "text":
        if mysql:
            text = f"CONVERT({v} USING utf8mb4)" if c.canonical.convert else v
            return [f"CHAR_LENGTH({text if c.canonical.convert == 'bytes' else v})", text]
        text = _text(dialect, v)
        return [_text(dialect, f"LENGTH({text})"), text]
    if kind == "null_only":
        return []
    raise ValueError(f"column {c.name}: unknown canonical kind {kind!r}")


def _null(c: CanonicalColumn, dialect: str, v: str | None) -> str:
    """The condition that the canonical value is NULL (MySQL: after the type map's fixes)."""
    if v is None:
        return "TRUE"
    if dialect == "mysql" and c.canonical.kind in ("date", "datetime", "timestamp", "year"):
        return f"{_fields(c, dialect, v)[0]} IS NULL"
    return f"{v} IS NULL"


def _concat(dialect: str, parts: Sequence[str]) -> str:
    if dialect == "bigquery":
        return f"ARRAY_TO_STRING([{', '.join(parts)}], '|')"
    return f"CONCAT_WS('|', {', '.join(parts)})"


def _md5(dialect: str, text: str) -> str:
    return {"mysql": f"MD5({text})", "duckdb": f"md5({text})", "bigquery": f"TO_HEX(MD5({text}))"}[dialect]


def _prefix(dialect: str, hex_: str, digits: int) -> str:
    return f"{'SUBSTRING' if dialect == 'mysql' else 'SUBSTR'}({hex_}, 1, {digits})"


def _hash60(dialect: str, hex_: str) -> str:
    """The first 60 bits of an MD5 hex text, as an integer the SUM adds exactly."""
    head = _prefix(dialect, hex_, HASH_HEX)
    if dialect == "mysql":
        return f"CAST(CONV({head}, 16, 10) AS UNSIGNED)"
    if dialect == "duckdb":
        return f"CAST('0x' || {head} AS UBIGINT)"
    return f"CAST(CAST(CONCAT('0x', {head}) AS INT64) AS NUMERIC)"  # SUM of INT64 would overflow


def _day_number_sql(dialect: str, day: str) -> str:
    return {"mysql": f"(TO_DAYS({day}) - {EPOCH_DAYS})", "duckdb": f"({day} - DATE '1970-01-01')",
            "bigquery": f"UNIX_DATE({day})"}[dialect]


def _covered(dialect: str, coverage: Coverage, day: str) -> str | None:
    if coverage.whole:
        return None
    recent = f" OR {day} >= DATE '{coverage.recent}'" if coverage.recent else ""
    return f"(MOD({_day_number_sql(dialect, day)}, {coverage.cycle}) = {coverage.phase}{recent})"


def key_text(digest: RowDigest, dialect: str, ref: dict[str, str | None]) -> str:
    """The text a row's key is hashed from; `ref`: column name -> value expression."""
    return _concat(dialect, [f for c in digest.key for f in _fields(c, dialect, ref[c.name])])


def row_text(digest: RowDigest, dialect: str, ref: dict[str, str | None]) -> str:
    """The text a row's values are hashed from (null flags, then every column's fields)."""
    flags = []
    flagged = [c for c in digest.columns if c.flagged]
    for start in range(0, len(flagged), FLAG_BITS):
        terms = [_if(dialect, _null(c, dialect, ref[c.name]), str(1 << i), "0") if dialect != "mysql"
                 else f"({_null(c, dialect, ref[c.name])}) * {1 << i}"
                 for i, c in enumerate(flagged[start:start + FLAG_BITS])]
        flags.append(_text(dialect, "(" + " + ".join(terms) + ")"))
    fields = [f for c in digest.columns for f in _fields(c, dialect, ref[c.name])]
    return _concat(dialect, [*flags, *fields])


def digest_sql(
    dialect: str, digest: RowDigest, scope: Scope, *, source: str, where: str | None, day: str,
    ref: dict[str, str | None],
) -> str:
    """SELECT g, n, keys, vals: per group of `scope`, the rows, the sum of their key hashes and
    the sum of their row hashes (days outside the coverage: 0). `source` is the FROM clause,
    `where` its own condition, `day` the day of a row, `ref` column name -> value expression
    (None: the column is absent, compared as NULL)."""
    key = _md5(dialect, key_text(digest, dialect, ref)) if digest.key else None
    group = day if scope.day is None or key is None else _prefix(dialect, key, scope.digits)
    condition = _where(where, _within(dialect, scope, key))
    covered = _covered(dialect, digest.coverage, day) if scope.day is None else None
    values = _hash60(dialect, _md5(dialect, row_text(digest, dialect, ref)))
    if covered:
        values = _if(dialect, covered, values, "0")
    keys = f"SUM({_hash60(dialect, key)})" if key else "0"
    return (f"SELECT {group} AS g, COUNT(*) AS n, {keys} AS k, SUM({values}) AS v FROM {source}"
            + condition + " GROUP BY 1")


def _where(*conditions: str | None) -> str:
    """A WHERE clause of every condition given (each parenthesized: a day filter is an OR)."""
    present = [f"({c})" for c in conditions if c]
    return f" WHERE {' AND '.join(present)}" if present else ""


def _within(dialect: str, scope: Scope, key: str | None) -> str | None:
    if not scope.within or key is None:
        return None
    digits = len(scope.within[0])
    if any(len(p) != digits or not all(ch in "0123456789abcdef" for ch in p) for p in scope.within):
        raise ValueError(f"key hash prefixes must be lower-case hex of one length: {scope.within}")
    listed = ", ".join(f"'{p}'" for p in scope.within)
    return f"{_prefix(dialect, key, digits)} IN ({listed})"


def rows_sql(
    dialect: str, digest: RowDigest, scope: Scope, *, source: str, where: str | None,
    ref: dict[str, str | None],
) -> str:
    """The rows of `scope` with what narrowing compares: each key column (k0...), each column's
    value (v0..., to show) and canonical fields (f0_0...; NULL for an absent column)."""
    key = _md5(dialect, key_text(digest, dialect, ref)) if digest.key else None
    items = [f"{ref[c.name]} AS k{i}" for i, c in enumerate(digest.key)]
    for i, c in enumerate(digest.columns):
        v = ref[c.name]
        fields = _fields(c, dialect, v) if v is not None else ["NULL"] * field_count(c)
        items.append(f"{v or 'NULL'} AS v{i}")
        # The text each side hashes (MySQL's CONCAT_WS prints a DOUBLE 12.0 as '12', its driver not).
        items += [f"{f'CAST({f} AS CHAR)' if dialect == 'mysql' else f} AS f{i}_{j}" for j, f in enumerate(fields)]
    return f"SELECT {', '.join(items)} FROM {source}" + _where(where, _within(dialect, scope, key))


def markdown_table() -> str:
    """The canonical kinds of docs/type-mapping.md, with the SQL of each dialect."""
    lines = ["| kind | canonical fields | MySQL | DuckDB | BigQuery |", "| --- | --- | --- | --- | --- |"]
    for kind, text in KINDS.items():
        c = CanonicalColumn("x", "x", Canonical(kind, scale=2 if kind == "decimal" else 0))
        sql = [" ; ".join(_fields(c, d, "x")) or "-" for d in DIALECTS]
        lines.append(f"| {kind} | {text} | " + " | ".join(f"`{s}`" for s in sql) + " |")
    return "\n".join(lines) + "\n"
