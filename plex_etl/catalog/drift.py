"""Schema drift: the columns MySQL has now against the committed catalog, read before each load.

The committed catalog is read-only in production (it ships in the image), so a load does not
wait for `plex-etl discover` to follow MySQL: it reads the table's live columns (one
INFORMATION_SCHEMA query, just before its read) and replicates the catalog's columns that still
exist plus the new ones the type map can load. What differs is a `ColumnDrift`, recorded in the
load's metadata; the schema check reports it and tells to run `discover`, which then records it
in the catalog (docs/design-notes.md, "Schema evolution contract").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from plex_etl.catalog.model import Column, Table
from plex_etl.catalog.naming import warehouse_names
from plex_etl.mysql import Run, text_value
from plex_etl.typemap import TypeMappingError, map_column


class SchemaDriftError(RuntimeError):
    """MySQL no longer has what a table's read needs (the table itself, or a column its plan
    names); the message names table and column and what to do. Retrying does not help."""


@dataclass(frozen=True)
class SkippedColumn:
    """A column new in MySQL whose type the type map cannot load: not replicated."""

    name: str
    column_type: str
    reason: str


@dataclass(frozen=True)
class ColumnDrift:
    """How a table's live columns differ from its catalog entry."""

    added: tuple[Column, ...] = ()  # new in MySQL, replicated (warehouse names and mapped types set)
    dropped: tuple[str, ...] = ()  # in the catalog, gone from MySQL: not read; retired in the warehouse
    skipped: tuple[SkippedColumn, ...] = ()  # new in MySQL, a type the type map cannot load
    retyped: tuple[str, ...] = ()  # "column: catalog type -> MySQL type", read as the catalog maps it

    @property
    def empty(self) -> bool:
        return not (self.added or self.dropped or self.skipped or self.retyped)

    def describe(self) -> list[str]:
        """One line per kind of difference, for logs and check descriptions."""
        lines = []
        if self.added:
            lines.append("new in MySQL, replicated: " + ", ".join(f"{c.name} ({c.column_type})" for c in self.added))
        if self.dropped:
            lines.append("dropped in MySQL, kept with their history in the warehouse (retired): "
                         + ", ".join(self.dropped))
        if self.skipped:
            lines.append("new in MySQL, NOT replicated (type not supported): " + "; ".join(
                f"{c.name} ({c.column_type}): {c.reason}" for c in self.skipped))
        if self.retyped:
            lines.append("type changed in MySQL, still read as the catalog maps it: " + "; ".join(self.retyped))
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [{k: v for k, v in asdict(c).items() if v is not None} for c in self.added],
            "dropped": list(self.dropped),
            "skipped": [asdict(c) for c in self.skipped],
            "retyped": list(self.retyped),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ColumnDrift:
        data = data or {}
        return cls(
            added=tuple(Column(**c) for c in data.get("added") or ()),
            dropped=tuple(data.get("dropped") or ()),
            skipped=tuple(SkippedColumn(**c) for c in data.get("skipped") or ()),
            retyped=tuple(data.get("retyped") or ()),
        )


def _mapping(column: Column, override: str | None) -> tuple[str, str] | str:
    """The warehouse types a column maps to, or why it cannot be mapped."""
    try:
        mapped = map_column(column, override)
    except TypeMappingError as exc:
        return str(exc)
    return mapped.bigquery_type, mapped.local_type


def column_drift(table: Table, live: Sequence[Column], overrides: Mapping[str, str] | None = None) -> ColumnDrift:
    """The difference between a table's catalog entry and its `live` columns (read_columns)."""
    overrides = overrides or {}
    known = {c.name: c for c in table.columns}
    present = {c.name for c in live}
    names = warehouse_names([c.name for c in live], existing={c.name: c.warehouse_name for c in table.columns
                                                              if c.warehouse_name})
    added, skipped, retyped = [], [], []
    for column in live:
        if column.name not in known:
            mapped = _mapping(column, None)
            if isinstance(mapped, str):
                skipped.append(SkippedColumn(column.name, column.column_type, mapped))
            else:
                added.append(Column(**{**asdict(column), "warehouse_name": names[column.name],
                                       "bigquery_type": mapped[0], "local_type": mapped[1]}))
            continue
        old = known[column.name]
        if _mapping(old, overrides.get(old.name)) != _mapping(column, overrides.get(old.name)):
            retyped.append(f"{column.name}: {old.column_type} -> {column.column_type}")
    dropped = tuple(c.name for c in table.columns if c.name not in present)
    return ColumnDrift(tuple(added), dropped, tuple(skipped), tuple(retyped))


def drifted_table(table: Table, drift: ColumnDrift) -> Table:
    """The table as a load replicates it: the catalog's columns MySQL still has, then the new ones."""
    if drift.empty:
        return table
    kept = tuple(c for c in table.columns if c.name not in drift.dropped)
    return replace(table, columns=kept + drift.added)


def read_live_columns(run: Run, tables: Sequence[str]) -> dict[str, list[Column]]:
    """The columns MySQL has now for `tables`, in the connection's database (absent tables omitted)."""
    from plex_etl.catalog.discover import read_columns

    ((database,),) = run("SELECT DATABASE()")
    return read_columns(run, text_value(database) or "", list(tables))
