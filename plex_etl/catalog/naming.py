"""Warehouse names for MySQL tables and columns: valid, deterministic, collision-free.

MySQL names may hold accents, spaces, dots, start with digits or be SQL keywords
(`Fecha Alta`, `Número`, `1erTrimestre`, `select`); BigQuery and DuckDB identifiers are
`[A-Za-z_][A-Za-z0-9_]*`, compared ignoring case, and BigQuery forbids a few column
prefixes. `warehouse_names` derives, for each MySQL name in input order:

1. accents stripped (NFKD, combining marks dropped), every other character outside
   `[A-Za-z0-9_]` replaced by `_` (an empty name becomes `_`);
2. a leading digit prefixed with `_` (`1erTrimestre` -> `_1erTrimestre`);
3. a BigQuery-reserved prefix (`_TABLE_`, `_FILE_`, `_PARTITION`, `_ROW_TIMESTAMP`,
   `__ROOT__`, `_COLIDENTIFIER`, any case) prefixed with `x` (`_PARTITIONTIME` ->
   `x_PARTITIONTIME`);
4. a BigQuery or DuckDB reserved keyword suffixed with `_` (`select` -> `select_`);
5. cut to 300 characters (BigQuery's column name limit);
6. a name already taken ignoring case (by an earlier input, a name recorded in the
   previous catalog, or a `reserved` name such as the bookkeeping columns
   `_etl_partition_date` / `_etl_loaded_at`) gets `_2`, `_3`... in input order.

Names recorded in a previous catalog (`existing`) are kept as they are: a warehouse
rename never happens silently, and new names never collide with recorded ones.

`asset_names` does the same for table names. Dagster derives a step name from an asset
key by replacing every character outside `[A-Za-z0-9_]` with `_`; since the taken-name
check compares those step names (ignoring case), tables `a-b`, `a.b` and `a_b` always get
distinct asset names even when recorded names carry such characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence

from plex_etl.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN

# The warehouse names the analysts' queries already use: one home for each rule.
DEFAULT_DATASET = "plex_analytics"  # BigQuery dataset / local DuckDB schema
LATEST_SUFFIX = "_latest"  # `<table>_latest`: the view of a snapshot table's latest snapshot


def warehouse_table(source: str, table_name: str) -> str:
    """`<source>_<table>`: a replicated table's warehouse name (`table_name` is the table's
    collision-free warehouse name from the catalog)."""
    return f"{source}_{table_name}"


def latest_view(table: str) -> str:
    """The `_latest` view of a snapshot table's warehouse name."""
    return f"{table}{LATEST_SUFFIX}"

MAX_LENGTH = 300


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# BigQuery GoogleSQL reserved keywords (lexical structure reference).
BIGQUERY_RESERVED = _words("""
all and any array as asc assert_rows_modified at between by case cast collate contains
create cross cube current default define desc distinct else end enum escape except exclude
exists extract false fetch following for from full group grouping groups hash having if
ignore in inner intersect interval into is join lateral left like limit lookup merge
natural new no not null nulls of on or order outer over partition preceding proto qualify
range recursive respect right rollup rows select set some struct tablesample then to treat
true unbounded union unnest using when where window with within
""")

# DuckDB keywords that cannot be unquoted column names: duckdb_keywords() categories
# 'reserved' and 'type_function' (DuckDB 1.x/2.0), frozen here so names never depend on
# the installed version.
DUCKDB_RESERVED = _words("""
all analyse analyze and any array as asc asymmetric both case cast check collate column
constraint create default deferrable desc describe distinct do else end except false fetch
for foreign from group having in initially intersect into lambda lateral leading limit not
null offset on only or order pivot pivot_longer pivot_wider placing primary qualify
references returning select show some summarize symmetric table then to trailing true union
unique unpivot using variadic when where window with
anti asof authorization binary collation concurrently cross freeze full generated glob
ilike inner is isnull join left like map natural notnull outer overlaps positional right
semi similar struct tablesample try_cast verbose at by columns tuple unpack
""")

RESERVED_WORDS = BIGQUERY_RESERVED | DUCKDB_RESERVED

BIGQUERY_RESERVED_PREFIXES = (
    "_TABLE_", "_FILE_", "_PARTITION", "_ROW_TIMESTAMP", "__ROOT__", "_COLIDENTIFIER",
)

BOOKKEEPING_COLUMNS = (PARTITION_COLUMN, LOADED_AT_COLUMN)

_INVALID = re.compile(r"[^A-Za-z0-9_]")


def _unaccented(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def base_name(name: str) -> str:
    """A valid identifier for `name` before collision handling (steps 1-5 above)."""
    text = _INVALID.sub("_", _unaccented(name)) or "_"
    if text[0].isdigit():
        text = "_" + text
    if text.upper().startswith(BIGQUERY_RESERVED_PREFIXES):
        text = "x" + text
    if text.lower() in RESERVED_WORDS:
        text += "_"
    return text[:MAX_LENGTH]


def step_key(name: str) -> str:
    """What Dagster's step name keeps of a name, folded for case-insensitive comparison."""
    return _INVALID.sub("_", name).lower()


def _with_suffix(base: str, n: int) -> str:
    suffix = f"_{n}"
    return base[: MAX_LENGTH - len(suffix)] + suffix


def warehouse_names(
    names: Sequence[str],
    existing: Mapping[str, str] | None = None,
    reserved: Collection[str] = BOOKKEEPING_COLUMNS,
) -> dict[str, str]:
    """MySQL name -> warehouse name, for every name in `names` (see the module docstring)."""
    existing = existing or {}
    taken = {step_key(r) for r in reserved} | {step_key(v) for v in existing.values()}
    result: dict[str, str] = {}
    for name in names:
        if name in result:
            continue
        if name in existing:
            result[name] = existing[name]
            continue
        base = base_name(name)
        candidate, n = base, 1
        while step_key(candidate) in taken:
            n += 1
            candidate = _with_suffix(base, n)
        taken.add(step_key(candidate))
        result[name] = candidate
    return result


def asset_names(
    tables: Sequence[str], existing: Mapping[str, str] | None = None
) -> dict[str, str]:
    """MySQL table name -> warehouse table / asset key name, unique as Dagster step names."""
    return warehouse_names(tables, existing, reserved=())


_INVALID_TAG = re.compile(r"[^A-Za-z0-9_.\-]")
MAX_TAG_LENGTH = 63


def group_name(*parts: str) -> str:
    """A Dagster asset group name (`[A-Za-z0-9_]+`) from parts joined by `_`: accents stripped,
    any other character `_` (`odd`, `facturación` -> `odd_facturacion`)."""
    return "_".join(_INVALID.sub("_", _unaccented(part)) or "_" for part in parts)


def tag_value(text: str) -> str:
    """A Dagster tag value: at most 63 characters of `[A-Za-z0-9_.-]` (accents stripped, any
    other character `_`)."""
    return _INVALID_TAG.sub("_", _unaccented(text))[:MAX_TAG_LENGTH]
