"""Generate a table's rows chunk by chunk, as LOAD DATA text, column-wise with numpy/pyarrow.

A chunk is rows [start, stop) of a table; its random numbers come from a PCG64 generator
seeded by (seed, table, chunk number), so a build is reproducible whatever the order of
tables, and memory stays bounded by the chunk size.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plex_etl.demo import values as v
from plex_etl.demo.keys import Keys, table_seed
from plex_etl.demo.rules import COLUMN_KINDS, ROW_RULES
from plex_etl.demo.schema import Column, ForeignKey, Table

CHUNK_ROWS = 200_000
NULL = "\\N"
# Nullable foreign keys are left empty this often.
NULL_REFERENCE_SHARE = 0.08
# Share of rows given a value only a messy production database has; the row MESS_ROW (or
# the last row of smaller tables) always gets one, so even a tiny build shows every kind.
MESS_SHARE = 0.004
MESS_ROW = 17


@dataclass(frozen=True)
class Chunk:
    table: str
    start: int
    stop: int
    text: bytes


def load_columns(table: Table) -> list[tuple[str, str | None]]:
    """(target in the LOAD DATA column list, SET expression) for every stored column.

    Binary columns travel as hex and BIT columns as numbers, through user variables.
    """
    targets: list[tuple[str, str | None]] = []
    for column in table.columns:
        if column.generated:
            continue
        if column.is_binary:
            targets.append((f"@{column.name}", f"`{column.name}` = UNHEX(@{column.name})"))
        elif column.base_type == "bit":
            targets.append((f"@{column.name}", f"`{column.name}` = CAST(@{column.name} AS UNSIGNED)"))
        else:
            targets.append((f"`{column.name}`", None))
    return targets


class TableGenerator:
    def __init__(self, keys: Keys, table: Table, period: v.Period) -> None:
        self.keys = keys
        self.table = table
        self.period = period
        self.total = keys.counts[table.name]
        self.references = keys.references_of(table.name)
        self.mess_row = np.zeros(0, dtype=bool)  # the chunk's rows that must be messy

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        for number, start in enumerate(range(0, self.total, chunk_rows)):
            stop = min(start + chunk_rows, self.total)
            rng = np.random.Generator(
                np.random.PCG64(table_seed(self.keys.seed, "rows", self.table.name, number)))
            yield Chunk(self.table.name, start, stop, self.text(self.columns(rng, start, stop)))

    # -- values --------------------------------------------------------------------------

    def columns(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, pa.Array]:
        n = stop - start
        rows = np.arange(start, stop, dtype=np.int64)
        table = self.table
        out: dict[str, pa.Array] = {}
        for name in sorted(self.keys.key_columns(table.name)):
            out[name] = pa.array(self.keys.values(table.name, name, rows))
        for fk in self.references:
            if not set(fk.columns) & out.keys():
                out.update(self.reference(rng, fk, rows))
        for name in table.event_dates:
            out[name] = v.event_dates(rng, table.column(name), rows, self.total, self.period)
        if table.lookup:
            out["Descripcion"] = pa.array(
                np.asarray(table.values, dtype=object)[rows % len(table.values)], type=pa.string())
        rule = ROW_RULES.get((self.keys.schema.name, table.name))
        ruled = rule(rng, n) if rule else {}
        self.mess_row = rows == min(MESS_ROW, self.total - 1)
        for column in table.columns:
            if column.name in out or column.generated:
                continue
            if column.name in ruled:
                out[column.name] = ruled[column.name]
                continue
            values = self.generic(rng, column, n)
            out[column.name] = self.with_nulls(rng, column, values)
        return out

    def reference(self, rng: np.random.Generator, fk: ForeignKey,
                  rows: np.ndarray) -> dict[str, pa.Array]:
        n = len(rows)
        parent_count = self.keys.counts[fk.referenced_table]
        if fk.referenced_table == self.table.name:
            # A tree: a row's parent comes before it, so there are no cycles; roots are NULL.
            parents = (rng.random(n) * rows).astype(np.int64)
            empty = (rows == 0) | (rng.random(n) < 0.3)
        else:
            parents = rng.integers(0, parent_count, n)
            empty = np.zeros(n, dtype=bool)
        nullable = all(self.table.column(c).nullable for c in fk.columns)
        if nullable:
            empty |= rng.random(n) < NULL_REFERENCE_SHARE
        result = {}
        for column, referenced in zip(fk.columns, fk.referenced_columns, strict=True):
            values = self.keys.values(fk.referenced_table, referenced, parents)
            result[column] = pa.array(values, mask=empty if empty.any() else None)
        return result

    def generic(self, rng: np.random.Generator, column: Column, n: int) -> pa.Array:
        base = column.base_type
        if base in ("date", "datetime", "timestamp"):
            values = v.other_dates(rng, column, n, self.period)
            return self.zero_dates(rng, column, values)
        if base == "time":
            return self.long_times(rng, v.times(rng, n))
        if base == "year":
            return pa.array(rng.integers(1990, self.period.end.year + 1, n))
        if base in ("enum", "set"):
            return self.options(rng, column, n)
        if base == "json":
            return v.join('{"canal": "', v.pick(rng, ("mostrador", "web", "app", "teléfono"), n),
                          '", "items": ', pa.array(rng.integers(1, 12, n)).cast(pa.string()),
                          ', "cliente": "', v.person_names(rng, n), '"}')
        if base == "bit":
            return pa.array(rng.integers(0, 2, n))
        if column.is_binary:
            return v.binary_hex(rng, n, column.length or 16)
        if base in v.TEXT_TYPES:
            return v.strings(rng, column, n, COLUMN_KINDS.get((self.table.name, column.name)))
        return self.max_values(rng, column, v.numbers(rng, column, n))

    def options(self, rng: np.random.Generator, column: Column, n: int) -> pa.Array:
        options = v.enum_options(column)
        if column.base_type == "enum":
            return v.pick(rng, options, n)
        chosen = rng.random((n, len(options))) < 0.4
        parts = [pc.if_else(pa.array(chosen[:, i]), option, "") for i, option in enumerate(options)]
        joined = v.join(*parts, sep=",")
        # Collapse the separators of unset members: ",a,,b," -> "a,b".
        return pc.utf8_trim(pc.replace_substring_regex(joined, ",+", ","), ",")

    def messy(self, rng: np.random.Generator, n: int) -> pa.Array:
        return pa.array((rng.random(n) < MESS_SHARE) | self.mess_row)

    def with_nulls(self, rng: np.random.Generator, column: Column, values: pa.Array) -> pa.Array:
        if not column.nullable:
            return values
        # Each nullable column has its own share of NULLs, between 2% and 21%.
        share = 0.02 + (zlib.crc32(column.name.encode()) % 20) / 100
        mask = (rng.random(len(values)) < share) & ~self.mess_row
        return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)

    def zero_dates(self, rng: np.random.Generator, column: Column, values: pa.Array) -> pa.Array:
        if column.base_type == "timestamp":
            return values
        zero = "0000-00-00" if column.base_type == "date" else "0000-00-00 00:00:00"
        text = values.cast(pa.string())
        return pc.if_else(self.messy(rng, len(values)), zero, text)

    def long_times(self, rng: np.random.Generator, values: pa.Array) -> pa.Array:
        n = len(values)
        beyond = v.format_times(rng.integers(24 * 3600, 800 * 3600, n))
        negative = v.format_times(-rng.integers(60, 48 * 3600, n))
        values = pc.if_else(self.messy(rng, n), beyond, values)
        return pc.if_else(pa.array(rng.random(n) < MESS_SHARE / 2), negative, values)

    def max_values(self, rng: np.random.Generator, column: Column, values: pa.Array) -> pa.Array:
        base = column.base_type
        if base == "bigint" and column.unsigned:
            top = pa.scalar(v.MAX_UNSIGNED_BIGINT, pa.uint64())
            values = values.cast(pa.uint64())
        elif base in v.MAX_SIGNED and column.type.lower() != "tinyint(1)":
            top = pa.scalar(v.MAX_SIGNED[base], values.type)
        else:
            return values
        return pc.if_else(self.messy(rng, len(values)), top, values)

    # -- text ----------------------------------------------------------------------------

    def text(self, columns: dict[str, pa.Array]) -> bytes:
        """Tab-separated lines in LOAD DATA's default escaping, NULL as \\N, UTF-8."""
        fields = []
        for column in self.table.columns:
            if column.generated:
                continue
            values = columns[column.name]
            if values.type != pa.string():
                values = values.cast(pa.string())
            if column.base_type in v.TEXT_TYPES:
                values = pc.replace_substring(values, "\\", "\\\\")
                values = pc.replace_substring(values, "\t", "\\t")
                values = pc.replace_substring(values, "\n", "\\n")
            fields.append(values.fill_null(NULL))
        lines = v.join(v.join(*fields, sep="\t"), "", sep="\n")
        return _string_bytes(lines)


def _string_bytes(array: pa.Array) -> bytes:
    """The concatenated characters of a string array without copying row by row."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    first, last = offsets[array.offset], offsets[array.offset + len(array)]
    return array.buffers()[2].to_pybytes()[first:last]
