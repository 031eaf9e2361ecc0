"""The demo schemas: read from the package's schema files, rendered as MySQL DDL.

`plex_schema.yaml` is derived from the production reference by
`scripts/derive_demo_schema.py`; `quantio_schema.yaml` is written by hand in the same format:

    schema: NAME
    tables:
      TABLE:
        rows: production row count
        charset: latin1 | utf8mb4
        lookup: true            # optional: small reference table filled from `values`
        values: [...]           # optional: descriptions of the lookup rows
        primary_key: [COLUMN, ...]
        indexes: [[COLUMN, ...], ...]     # besides the primary key and foreign keys
        event_dates: [COLUMN, ...]        # spread over the demo's days
        columns:
        - {name: N, type: MYSQL TYPE, nullable: BOOL, default: TEXT, extra: auto_increment,
           generated: EXPRESSION}
    foreign_keys:
    - {name: N, table: T, columns: [...], referenced_table: R, referenced_columns: [...]}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).parent

# Tables smaller than this in production are master data: the demo keeps all their rows.
MASTER_DATA_ROWS = 1000

_NUMERIC_DEFAULT = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    extra: str | None = None
    generated: str | None = None

    @property
    def base_type(self) -> str:
        """The type name without length or attributes: `varchar`, `int`, `decimal`..."""
        return re.split(r"[(\s]", self.type, maxsplit=1)[0].lower()

    @property
    def length(self) -> int | None:
        """The declared length of character types (`varchar(20)` -> 20)."""
        match = re.match(r"\w+\((\d+)\)", self.type)
        return int(match.group(1)) if match else None

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.type.lower()

    @property
    def is_binary(self) -> bool:
        return self.base_type in ("blob", "tinyblob", "mediumblob", "longblob", "binary",
                                  "varbinary")

    def ddl(self) -> str:
        parts = [f"`{self.name}`", self.type]
        if self.generated:
            return " ".join([*parts, f"AS ({self.generated}) VIRTUAL"])
        parts.append("NULL" if self.nullable else "NOT NULL")
        if self.default is not None:
            numeric = _NUMERIC_DEFAULT.match(self.default) and self.base_type not in (
                "char", "varchar", "enum", "set")
            parts.append(f"DEFAULT {self.default if numeric else quote(self.default)}")
        if self.extra:
            parts.append(self.extra.upper())
        return " ".join(parts)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    referenced_table: str
    referenced_columns: tuple[str, ...]

    def ddl(self) -> str:
        return (
            f"CONSTRAINT `{self.name}` FOREIGN KEY ({names(self.columns)}) "
            f"REFERENCES `{self.referenced_table}` ({names(self.referenced_columns)})"
        )


@dataclass(frozen=True)
class Table:
    name: str
    rows: int
    charset: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    event_dates: tuple[str, ...] = ()
    lookup: bool = False
    values: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = field(default=())

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name}.{name}")

    def ddl(self) -> str:
        """CREATE TABLE with the primary key only: see `keys_ddl`."""
        lines = [column.ddl() for column in self.columns]
        lines.append(f"PRIMARY KEY ({names(self.primary_key)})")
        body = ",\n  ".join(lines)
        return (
            f"CREATE TABLE `{self.name}` (\n  {body}\n) ENGINE=InnoDB "
            f"DEFAULT CHARSET={self.charset}"
        )

    def keys_ddl(self) -> str | None:
        """ALTER TABLE adding the secondary indexes and foreign keys.

        Run after loading: building an index from sorted rows is faster than maintaining it
        row by row, and with foreign_key_checks=0 the foreign keys are added unchecked.
        """
        clauses = []
        indexed = [self.primary_key, *self.indexes]
        for i, index in enumerate(self.indexes, 1):
            clauses.append(f"ADD KEY `ix_{self.name}_{i}` ({names(index)})")
        for fk in self.foreign_keys:
            # InnoDB would add these itself; naming them keeps the DDL reproducible.
            if not any(existing[: len(fk.columns)] == fk.columns for existing in indexed):
                clauses.append(f"ADD KEY `{fk.name}` ({names(fk.columns)})")
                indexed.append(fk.columns)
            clauses.append(f"ADD {fk.ddl()}")
        if not clauses:
            return None
        return f"ALTER TABLE `{self.name}` " + ", ".join(clauses)


@dataclass(frozen=True)
class Schema:
    name: str
    tables: dict[str, Table]
    foreign_keys: tuple[ForeignKey, ...]


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def names(columns: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def _table(name: str, raw: dict[str, Any], foreign_keys: tuple[ForeignKey, ...]) -> Table:
    return Table(
        name=name,
        rows=int(raw["rows"]),
        charset=raw.get("charset", "utf8mb4"),
        columns=tuple(Column(**column) for column in raw["columns"]),
        primary_key=tuple(raw["primary_key"]),
        indexes=tuple(tuple(index) for index in raw.get("indexes") or ()),
        event_dates=tuple(raw.get("event_dates") or ()),
        lookup=bool(raw.get("lookup", False)),
        values=tuple(raw.get("values") or ()),
        foreign_keys=tuple(fk for fk in foreign_keys if fk.table == name),
    )


@functools.cache
def load_schema(schema_name: str) -> Schema:
    """The demo schema `plex` or `quantio`, as shipped with the package."""
    path = SCHEMA_DIR / f"{schema_name}_schema.yaml"
    if not path.exists():
        raise ValueError(f"unknown demo schema '{schema_name}': expected 'plex' or 'quantio'")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    foreign_keys = tuple(
        ForeignKey(
            name=fk["name"], table=fk["table"], columns=tuple(fk["columns"]),
            referenced_table=fk["referenced_table"],
            referenced_columns=tuple(fk["referenced_columns"]),
        )
        for fk in raw["foreign_keys"]
    )
    tables = {name: _table(name, body, foreign_keys) for name, body in raw["tables"].items()}
    return Schema(name=raw["schema"], tables=tables, foreign_keys=foreign_keys)


def expected_rows(schema_name: str, table: str, scale: float) -> int:
    """Rows the demo builds for `table` at `scale`.

    Production rows x scale, rounded; master data (fewer than 1000 production rows, e.g.
    sucursales, rubros, empresas and the lookup tables) keeps its production count at any
    scale, and every table has at least one row.
    """
    production = load_schema(schema_name).tables[table].rows
    if production < MASTER_DATA_ROWS:
        return production
    return max(1, round(production * scale))
