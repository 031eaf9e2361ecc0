"""Primary-key layouts: which key values row i of a table has, without storing the rows.

Every table's rows are numbered 0..n-1 and its key values are a function of that number,
so a child can pick parent rows by number and still get key values that exist:

- sequence: the first primary-key column counts 1, 2, 3... (strings get a prefix, a
  char(1) key uses the AFIP province letters), other key columns are free;
- groups: the key starts with a reference to a parent (factlineas -> factcabecera): child
  rows are dealt to parent rows in order, in groups of varying size (some parents get
  none), and the remaining key columns count within the group (Orden 1, 2, ...), or, when
  they reference another table, walk its rows from a per-group offset;
- distinct: the key is exactly a reference to a parent (factlineascostos -> factlineas):
  each child takes a different parent row, in order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from plex_etl.demo.schema import ForeignKey, Schema, Table, expected_rows

PROVINCE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
INTEGER_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")


def table_seed(seed: int, *words: str | int) -> np.random.SeedSequence:
    """A seed sequence for (seed, words...): stable across processes, unlike hash()."""
    entropy = [seed] + [zlib.crc32(str(w).encode()) for w in words]
    return np.random.SeedSequence(entropy)


@dataclass(frozen=True)
class Layout:
    mode: str  # "sequence" | "groups" | "distinct"
    parent: ForeignKey | None = None
    # Key columns after the parent's: (column, referenced fk or None when it just counts).
    counters: tuple[tuple[str, ForeignKey | None], ...] = ()


class Keys:
    """Row counts and key values of every table of a schema at a given scale."""

    def __init__(self, schema: Schema, scale: float, seed: int,
                 references: tuple[ForeignKey, ...]) -> None:
        self.schema = schema
        self.seed = seed
        self.references = references
        self.counts = {name: expected_rows(schema.name, name, scale) for name in schema.tables}
        self.layouts = {name: self._layout(table) for name, table in schema.tables.items()}
        self._group_ends: dict[str, np.ndarray] = {}

    def references_of(self, table: str) -> tuple[ForeignKey, ...]:
        return tuple(fk for fk in self.references if fk.table == table)

    def _layout(self, table: Table) -> Layout:
        pk = table.primary_key
        for fk in self.references_of(table.name):
            if fk.referenced_table != table.name and pk[: len(fk.columns)] == fk.columns:
                if len(fk.columns) == len(pk):
                    return Layout("distinct", fk)
                single = {ref.columns[0]: ref for ref in self.references_of(table.name)
                          if len(ref.columns) == 1 and ref is not fk}
                counters = tuple((c, single.get(c)) for c in pk[len(fk.columns):])
                return Layout("groups", fk, counters)
        return Layout("sequence")

    # -- locating rows -------------------------------------------------------------------

    def _ends(self, table: str) -> np.ndarray:
        """Cumulative child counts per parent row (groups layout), computed once."""
        if table not in self._group_ends:
            layout = self.layouts[table]
            assert layout.parent is not None
            parents = self.counts[layout.parent.referenced_table]
            rng = np.random.Generator(np.random.PCG64(table_seed(self.seed, "groups", table)))
            weights = np.cumsum(rng.uniform(0.2, 1.8, parents))
            ends = np.round(weights / weights[-1] * self.counts[table]).astype(np.int64)
            ends[-1] = self.counts[table]
            self._group_ends[table] = ends
        return self._group_ends[table]

    def locate(self, table: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(parent row, 1-based position within the parent's group) of child rows."""
        layout = self.layouts[table]
        assert layout.parent is not None
        parents = self.counts[layout.parent.referenced_table]
        if layout.mode == "distinct":
            if self.counts[table] > parents:
                raise ValueError(f"{table}: more rows than its parent, keys would repeat")
            return (rows * parents) // self.counts[table], np.ones(len(rows), dtype=np.int64)
        ends = self._ends(table)
        parent = np.searchsorted(ends, rows, side="right")
        starts = np.where(parent > 0, ends[np.maximum(parent - 1, 0)], 0)
        return parent, rows - starts + 1

    # -- key values ----------------------------------------------------------------------

    def values(self, table: str, column: str, rows: np.ndarray) -> np.ndarray:
        """Values of primary-key `column` for `rows` of `table`."""
        layout = self.layouts[table]
        spec = self.schema.tables[table]
        if layout.mode == "sequence":
            if column != spec.primary_key[0]:
                raise KeyError(f"{table}.{column} is not a generated key column")
            return self.sequence(spec, column, rows)
        assert layout.parent is not None
        parent_rows, position = self.locate(table, rows)
        if column in layout.parent.columns:
            referenced = layout.parent.referenced_columns[layout.parent.columns.index(column)]
            return self.values(layout.parent.referenced_table, referenced, parent_rows)
        for counter, reference in layout.counters:
            if counter == column:
                return self.counter(spec, column, reference, parent_rows, position, rows)
        raise KeyError(f"{table}.{column} is not a generated key column")

    def sequence(self, table: Table, column: str, rows: np.ndarray) -> np.ndarray:
        spec = table.column(column)
        if spec.base_type in INTEGER_TYPES:
            return rows + 1
        if spec.length == 1:
            return np.array(list(PROVINCE_LETTERS), dtype=object)[rows % len(PROVINCE_LETTERS)]
        prefix = table.name[:3].upper()
        return np.array([f"{prefix}-{r + 1:08d}" for r in rows.tolist()], dtype=object)

    def counter(self, table: Table, column: str, reference: ForeignKey | None,
                parent_rows: np.ndarray, position: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if reference is not None:
            # Distinct within a group as long as the group is smaller than the referenced
            # table; the offset spreads groups over all its rows.
            size = self.counts[reference.referenced_table]
            picked = (parent_rows * 7919 + position - 1) % size
            return self.values(reference.referenced_table, reference.referenced_columns[0],
                               picked)
        if table.column(column).base_type in INTEGER_TYPES:
            return position
        # A string counter must be unique by itself: number it by row.
        return np.array([f"{r + 1:010d}" for r in rows.tolist()], dtype=object)

    def key_columns(self, table: str) -> set[str]:
        """Columns whose values the layout decides."""
        layout = self.layouts[table]
        if layout.mode == "sequence":
            return {self.schema.tables[table].primary_key[0]}
        assert layout.parent is not None
        return {*layout.parent.columns, *(c for c, _ in layout.counters)}
