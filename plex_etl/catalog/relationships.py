"""Relationships the database does not declare, inferred from names, types and data.

A column set C of table T is proposed as referencing key K of table R when:
1. C is the leading part of an index of T (InnoDB indexes every FK, and the index
   stays when a constraint is dropped or was never declared; unindexed columns are
   rarely joined on); C is not AUTO_INCREMENT (it numbers its own rows) nor T's own
   single-column primary key, unless its name is K's (a 1:1 extension table such as
   apppedidospagos.IDPedido),
2. C and K have the same MySQL data types and signedness, column by column,
3. the names say so (same name, or C's name built from R's entity name such as
   `IDProveedor` -> `proveedores`, or C's name extending K's such as
   `IDComprobanteRef` -> `IDComprobante`; a shared generic name such as `id` does not
   count, so two tables keyed `id` 1..N are not related), or, failing that, C's name looks like a
   reference (`ID...`, `Cod...`, `...Id`), K is numeric and the data fits K's range
   tightly: C's largest value is at least half of K's largest (`IdUsuario` ->
   operadores.IDOperador, not the many larger tables whose ids also cover 1..439),
4. a sampled inclusion test confirms it: of up to `sample_size` distinct non-NULL
   values of C plus C's largest value, at least `min_ratio` exist in K.
Each inferred relationship carries its evidence (sample size, values matched).
Among several candidates for the same C, the strongest name evidence wins, then the
best match ratio, then the tightest range fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plex_etl.catalog.model import Catalog, Evidence, Relationship, Table

if TYPE_CHECKING:  # imported where used: loading Definitions needs no SQLAlchemy
    import sqlalchemy as sa

SAMPLE_SIZE = 500
MIN_RATIO = 0.98
_KEY_PREFIX = re.compile(r"^(id|cod|nro|num)", re.IGNORECASE)
_REFERENCE_LIKE = re.compile(r"^(id|cod)|id$", re.IGNORECASE)
# Key names that say nothing about the entity: two tables keyed `id` are not related by that.
GENERIC_KEY_NAMES = frozenset({"id", "codigo", "code", "cod", "pk", "key", "nro", "numero", "num", "uuid", "guid"})


def quote(identifier: str) -> str:
    """A MySQL identifier, backtick-quoted (backticks inside doubled)."""
    return "`" + identifier.replace("`", "``") + "`"


@dataclass(frozen=True)
class _Key:
    table: Table
    columns: tuple[str, ...]


@dataclass(frozen=True)
class _Candidate:
    key: _Key
    name_score: int
    evidence: Evidence
    range_fit: float  # largest referencing value / largest key value (numeric single columns)


def _singulars(table_name: str) -> set[str]:
    name = table_name.lower()
    forms = {name}
    if name.endswith("es"):
        forms.add(name[:-2])
    if name.endswith("s"):
        forms.add(name[:-1])
    return forms


def name_score(columns: tuple[str, ...], key: _Key) -> int:
    """3: same names; 2: entity name of the referenced table; 1: extends the key's name; 0: none.

    A single generic name (`id`, `codigo`, see GENERIC_KEY_NAMES) shared by both sides is no
    evidence: it scores 0.
    """
    pairs = list(zip(columns, key.columns, strict=True))
    generic = len(pairs) == 1 and columns[0].lower().replace("_", "") in GENERIC_KEY_NAMES
    if all(c.lower() == k.lower() for c, k in pairs) and not generic:
        return 3
    stems = [_KEY_PREFIX.sub("", c.lower()) for c in columns]
    forms = _singulars(key.table.name)
    if any(stem and any(stem == f or stem.endswith(f) for f in forms) for stem in stems):
        return 2
    if all(c.lower().startswith(k.lower()) and len(k) >= 4 for c, k in pairs):
        return 1
    return 0


def _referenceable_keys(catalog: Catalog) -> list[_Key]:
    keys = []
    for table in catalog.tables.values():
        for key in (table.primary_key, *table.unique_keys):
            if key:
                keys.append(_Key(table, tuple(key)))
    return keys


def _indexed_prefixes(table: Table, width: int) -> set[tuple[str, ...]]:
    return {i.columns[:width] for i in table.indexes if len(i.columns) >= width}


def _same_types(table: Table, columns: tuple[str, ...], key: _Key) -> bool:
    for c, k in zip(columns, key.columns, strict=True):
        a, b = table.column(c), key.table.column(k)
        if a.data_type != b.data_type or ("unsigned" in a.column_type) != ("unsigned" in b.column_type):
            return False
    return True


def inclusion(
    connection: sa.Connection, table: Table, columns: tuple[str, ...], key: _Key, sample_size: int
) -> Evidence:
    """How many of a sample of distinct values of `columns` exist in the referenced key."""
    cols = ", ".join(f"{quote(c)} AS c{i}" for i, c in enumerate(columns))
    not_null = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
    join = " AND ".join(f"r.{quote(k)} = s.c{i}" for i, k in enumerate(key.columns))
    # The lowest distinct values (cheap: an index range) plus the highest row (one index dive),
    # so that out-of-range values at the top are not missed.
    order = ", ".join(f"{quote(c)} DESC" for c in columns)
    sql = (
        f"SELECT COUNT(*), SUM(EXISTS (SELECT 1 FROM {quote(key.table.name)} r WHERE {join})) FROM ("
        f"(SELECT DISTINCT {cols} FROM {quote(table.name)} WHERE {not_null} LIMIT {int(sample_size)}) "
        f"UNION (SELECT {cols} FROM {quote(table.name)} WHERE {not_null} ORDER BY {order} LIMIT 1)) s"
    )
    import sqlalchemy as sa

    total, matched = connection.execute(sa.text(sql)).one()
    return Evidence(sample_size=int(total or 0), matched=int(matched or 0))


def infer_relationships(
    connection: sa.Connection,
    catalog: Catalog,
    sample_size: int = SAMPLE_SIZE,
    min_ratio: float = MIN_RATIO,
) -> list[Relationship]:
    """Relationships not declared in `catalog`, each with its sampled evidence."""
    declared = {(r.table, r.columns) for r in catalog.relationships}
    keys = _referenceable_keys(catalog)
    found: list[Relationship] = []
    for table in sorted(catalog.tables.values(), key=lambda t: t.name):
        taken: set[str] = {c for r in catalog.relationships if r.table == table.name for c in r.columns}
        for width in (3, 2, 1):  # composite first: (IDComprobante, Orden) beats IDComprobante alone
            best: dict[tuple[str, ...], list[_Candidate]] = {}
            for columns in sorted(_indexed_prefixes(table, width)):
                if (table.name, columns) in declared or taken & set(columns):
                    continue
                candidates = list(_candidates(connection, table, columns, keys, sample_size, min_ratio))
                if candidates:
                    best[columns] = candidates
            for columns, candidates in best.items():
                chosen = _choose(candidates)
                if chosen is None:
                    continue
                taken |= set(columns)
                found.append(
                    Relationship(
                        name=f"inferred_{table.name}_{'_'.join(columns)}",
                        table=table.name,
                        columns=columns,
                        referenced_table=chosen.key.table.name,
                        referenced_columns=chosen.key.columns,
                        inferred=True,
                        evidence=chosen.evidence,
                    )
                )
    return found


_NUMERIC = ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal")


def _largest(connection: sa.Connection, table: str, column: str) -> float:
    import sqlalchemy as sa

    value = connection.execute(sa.text(f"SELECT MAX({quote(column)}) FROM {quote(table)}")).scalar()
    return float(value or 0)


def _range_fit(connection: sa.Connection, table: Table, columns: tuple[str, ...], key: _Key) -> float:
    if len(columns) != 1 or table.column(columns[0]).data_type not in _NUMERIC:
        return 0.0
    top = _largest(connection, key.table.name, key.columns[0])
    return _largest(connection, table.name, columns[0]) / top if top > 0 else 0.0


def _candidates(
    connection: sa.Connection,
    table: Table,
    columns: tuple[str, ...],
    keys: Iterable[_Key],
    sample_size: int,
    min_ratio: float,
) -> Iterable[_Candidate]:
    own_key = len(columns) == 1 and table.primary_key == columns
    if any("auto_increment" in (table.column(c).extra or "") for c in columns):
        return
    for key in keys:
        if len(key.columns) != len(columns):
            continue
        if key.table.name == table.name and key.columns == columns:
            continue  # a key trivially includes itself
        if not _same_types(table, columns, key):
            continue
        score = name_score(columns, key)
        if own_key and score < 3:
            continue  # two tables numbered 1..N are not related by that alone
        if score == 0 and not all(_REFERENCE_LIKE.search(c) for c in columns):
            continue
        fit = _range_fit(connection, table, columns, key) if score == 0 else 0.0
        if score == 0 and not 0.5 <= fit <= 1.0:
            continue
        evidence = inclusion(connection, table, columns, key, sample_size)
        if evidence.sample_size and evidence.match_ratio >= min_ratio:
            yield _Candidate(key, score, evidence, fit)


def _choose(candidates: list[_Candidate]) -> _Candidate | None:
    ranked = sorted(
        candidates,
        key=lambda c: (-c.name_score, -c.evidence.match_ratio, -c.range_fit, c.key.table.name),
    )
    top = ranked[0]
    if top.name_score == 0 and len(ranked) > 1 and ranked[1].range_fit >= top.range_fit - 0.1:
        return None  # two keys fit the data about as well: a coincidence of ranges, not evidence
    return top
