"""Read a MySQL source's structure from INFORMATION_SCHEMA into a Catalog.

Only metadata queries, row estimates and small samples (for inferred relationships):
never a full scan of a table.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa

from plex_etl.catalog.model import Catalog, Column, Index, Relationship, Table
from plex_etl.catalog.naming import asset_names, warehouse_names
from plex_etl.catalog.relationships import infer_relationships, quote
from plex_etl.mysql import Run, runner, text_literal, text_value
from plex_etl.typemap import TypeMappingError, map_column


def _estimate(value: object, previous: int | None = None) -> int:
    """Two significant digits, and the previous catalog's figure while it is within 25%.

    InnoDB's estimates drift from one call to the next; the committed catalog should only
    change when a table really grew or shrank.
    """
    number = int(value or 0)
    if previous is not None and abs(number - previous) <= 0.25 * max(previous, 1):
        return previous
    if number < 100:
        return number
    digits = len(str(number)) - 2
    return round(number, -digits)


OWN_TABLES = "_plex_etl_*"  # plex_etl's own bookkeeping (the demo marker), never replicated


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if fnmatch.fnmatchcase(name, OWN_TABLES):
        return False
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def _json_columns(run: Run, database: str, tables: Sequence[str] | None = None) -> set[tuple[str, str]]:
    """MariaDB stores JSON as LONGTEXT plus a json_valid() check named after the column."""
    try:
        rows = run(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            f"WHERE CONSTRAINT_SCHEMA = {text_literal(database)}{_only(tables)}"
        )
    except Exception as exc:  # MySQL < 8.0.16 has no CHECK_CONSTRAINTS (1109 unknown table)
        if "CHECK_CONSTRAINTS" not in str(exc).upper():
            raise
        return set()
    found = set()
    for table, column, clause in rows:
        clause = text_value(clause) or ""
        if clause.replace(" ", "").lower().startswith("json_valid("):
            found.add((text_value(table), text_value(column)))
    return found


def _only(tables: Sequence[str] | None) -> str:
    return f" AND TABLE_NAME IN ({', '.join(text_literal(t) for t in tables)})" if tables is not None else ""


def read_columns(run: Run, database: str, tables: Sequence[str] | None = None) -> dict[str, list[Column]]:
    """The columns of every table of `database` (or of `tables` only: a few lookups in the data
    dictionary, cheap enough before every load), in MySQL's order, as the catalog records them
    before mapping. A table that does not exist has no entry. `run`: mysql.runner of a
    SQLAlchemy or a raw mysqlclient connection."""
    if tables is not None and not tables:
        return {}
    rows = [
        tuple(text_value(v) if not isinstance(v, int) else v for v in row)
        for row in run(
            "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, "
            "COLUMN_DEFAULT, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA, IS_GENERATED "
            f"FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {text_literal(database)}{_only(tables)} "
            "ORDER BY TABLE_NAME, ORDINAL_POSITION"
        )
    ]
    # MariaDB's JSON is a LONGTEXT with a check: look the checks up only where there is one.
    longtext = sorted({row[0] for row in rows if str(row[4]).lower() == "longtext"})
    json_columns = _json_columns(run, database, longtext if tables is not None else None) if longtext else set()
    columns: dict[str, list[Column]] = defaultdict(list)
    for (table, name, ordinal, column_type, data_type, nullable, default, charset, collation, extra,
         generated) in rows:
        is_json = (table, name) in json_columns
        columns[table].append(
            Column(
                name=name,
                ordinal=int(ordinal),
                column_type="json" if is_json else column_type,
                data_type="json" if is_json else data_type,
                nullable=nullable == "YES",
                default=None if default in (None, "NULL") else str(default),
                charset=charset,
                collation=collation,
                generated=(generated or "NEVER") != "NEVER",
                extra=extra or None,
            )
        )
    return dict(columns)


def read_structure(
    connection: sa.Connection,
    source: str,
    database: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    previous: Catalog | None = None,
) -> Catalog:
    """Tables, columns, keys and declared foreign keys of `database`.

    Warehouse names recorded in `previous` are kept, so a rediscovery never renames
    a warehouse table or column silently.
    """
    params = {"db": database}
    table_rows = connection.execute(
        sa.text(
            "SELECT TABLE_NAME, ENGINE, TABLE_ROWS, DATA_LENGTH, TABLE_COLLATION "
            "FROM information_schema.TABLES WHERE TABLE_SCHEMA = :db AND TABLE_TYPE = 'BASE TABLE' "
            "ORDER BY TABLE_NAME"
        ),
        params,
    ).all()
    names = [r[0] for r in table_rows if _selected(r[0], include, exclude)]
    wanted = set(names)

    every = read_columns(runner(connection), database)
    columns = {name: every.get(name, []) for name in names}

    index_columns: dict[tuple[str, str], list[str]] = defaultdict(list)
    index_unique: dict[tuple[str, str], bool] = {}
    for row in connection.execute(
        sa.text(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = :db ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        ),
        params,
    ):
        if row.TABLE_NAME in wanted:
            key = (row.TABLE_NAME, row.INDEX_NAME)
            index_columns[key].append(row.COLUMN_NAME)
            index_unique[key] = int(row.NON_UNIQUE) == 0

    fk_columns: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for row in connection.execute(
        sa.text(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
            "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL "
            "ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION"
        ),
        params,
    ):
        if row.TABLE_NAME in wanted:
            fk_columns[(row.TABLE_NAME, row.CONSTRAINT_NAME)].append(
                (row.COLUMN_NAME, row.REFERENCED_TABLE_NAME, row.REFERENCED_COLUMN_NAME)
            )

    previous_tables = previous.tables if previous else {}
    table_names = asset_names(
        names, existing={n: t.warehouse_name for n, t in previous_tables.items() if t.warehouse_name}
    )
    meta = {r[0]: r for r in table_rows}
    tables: dict[str, Table] = {}
    for name in names:
        cols = columns[name]
        old = previous_tables.get(name)
        recorded = {c.name: c.warehouse_name for c in old.columns} if old else {}
        col_names = warehouse_names([c.name for c in cols], existing=recorded)
        cols = [_with_mapping(name, replace(c, warehouse_name=col_names[c.name])) for c in cols]
        indexes = tuple(
            Index(index, tuple(index_columns[(t, index)]), index_unique[(t, index)])
            for (t, index) in sorted(index_columns)
            if t == name
        )
        primary = next((i.columns for i in indexes if i.name == "PRIMARY"), ())
        _, engine, rows, data_length, collation = meta[name]
        tables[name] = Table(
            name=name,
            columns=tuple(cols),
            primary_key=primary,
            unique_keys=tuple(i.columns for i in indexes if i.unique and i.name != "PRIMARY"),
            indexes=indexes,
            engine=engine,
            row_estimate=_estimate(rows, old.row_estimate if old else None),
            data_bytes=_estimate(data_length, old.data_bytes if old else None),
            warehouse_name=table_names[name],
            charset=collation.split("_")[0] if collation else None,
        )

    relationships = tuple(
        Relationship(
            name=constraint,
            table=table,
            columns=tuple(c for c, _, _ in parts),
            referenced_table=parts[0][1],
            referenced_columns=tuple(r for _, _, r in parts),
        )
        for (table, constraint), parts in sorted(fk_columns.items())
    )
    version = connection.execute(sa.text("SELECT VERSION()")).scalar()
    return Catalog(
        source=source, database=database, tables=tables, relationships=relationships,
        server_version=str(version),
    )


def _with_mapping(table: str, column: Column) -> Column:
    """Record the mapped types in the catalog so reviewers see them next to the MySQL type."""
    try:
        mapped = map_column(column)
    except TypeMappingError as exc:
        raise TypeMappingError(f"table {table}: {exc}") from None
    return replace(
        column,
        arrow_type=str(mapped.arrow_type),
        bigquery_type=mapped.bigquery_type,
        local_type=mapped.local_type,
    )


BOOL_SAMPLE_ROWS = 10_000


def boolean_columns(connection: sa.Connection, table: Table) -> list[str]:
    """TINYINT(1) columns whose sampled values are all 0 or 1: proposed as BOOL in the plan.

    Only a proposal: the type map keeps TINYINT(1) as INT64 unless the plan says "bool", and
    with "bool" a later 2 fails the load by name instead of silently becoming TRUE.
    """
    found = []
    for column in table.columns:
        if not column.column_type.lower().startswith("tinyint(1)"):
            continue
        low, high = connection.execute(sa.text(
            f"SELECT MIN(v), MAX(v) FROM (SELECT {quote(column.name)} AS v FROM {quote(table.name)} "
            f"LIMIT {BOOL_SAMPLE_ROWS}) s"
        )).one()
        if low is not None and low >= 0 and high <= 1:
            found.append(column.name)
    return found


def discover(
    connection: sa.Connection,
    source: str,
    database: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    previous: Catalog | None = None,
    infer: bool = True,
) -> Catalog:
    """The full catalog: structure, declared relationships, and inferred ones for the rest."""
    catalog = read_structure(connection, source, database, include, exclude, previous)
    if not infer:
        return catalog
    inferred = infer_relationships(connection, catalog)
    return replace(catalog, relationships=catalog.relationships + tuple(inferred))
