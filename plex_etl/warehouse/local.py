"""The local warehouse: one DuckDB file; a dataset is a DuckDB schema.

A load stages the record batches into a Parquet file in a per-load temporary directory
(one row group per chunk: memory stays flat), and only then opens the DuckDB file to run
the final step in one transaction (create/evolve the table, DELETE, INSERT ... SELECT FROM
read_parquet). DuckDB allows one writing process per file, so the file is opened only
for short steps, with a bounded retry while another process holds the lock: several
Dagster step processes can load different tables into the same file concurrently.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from plex_etl import canonical
from plex_etl.canonical import RowDigest, Scope
from plex_etl.warehouse.base import (
    CDC_POSITIONS_TABLE,
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    BatchStream,
    Digest,
    LoadMode,
    LoadResult,
    PositionConflict,
    StagedChanges,
    TableChanges,
    TargetTable,
    WarehouseError,
    WarehouseTimeout,
    cdc_staging_table,
    check_mode,
    day_range,
    retired_columns,
    stage_array,
)

DEFAULT_LOCK_TIMEOUT = 120.0
_MAX_DUCKDB_DECIMAL = 38


def quote(identifier: str) -> str:
    """A DuckDB quoted identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_TYPES: list[duckdb.DuckDBPyConnection] = []  # an in-memory database that only resolves type names
_TYPES_LOCK = threading.Lock()


def normalize_type(type_name: str) -> str:
    """DuckDB's canonical spelling of a type, as duckdb_columns() reports it ('INT8' -> 'BIGINT',
    'decimal(20, 0)' -> 'DECIMAL(20,0)', 'TIMESTAMPTZ' -> 'TIMESTAMP WITH TIME ZONE')."""
    with _TYPES_LOCK:
        if not _TYPES:
            _TYPES.append(duckdb.connect(":memory:"))
        try:
            row = _TYPES[0].execute(f"SELECT typeof(CAST(NULL AS {type_name}))").fetchone()
        except duckdb.Error as e:
            raise WarehouseError(f"invalid DuckDB type {type_name!r}: {e}") from e
    return str(row[0]) if row else type_name


def _is_lock_error(error: Exception) -> bool:
    text = str(error).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


class LocalWarehouse:
    """Warehouse in a DuckDB file (demos, development, tests)."""

    kind = "local"

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        staging_dir: str | Path | None = None,
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        """`path`: the DuckDB file (created on first write). `lock_timeout`: how long to wait
        while another process holds the file. `staging_dir`: where per-load temporary
        directories go (default: the system temp dir). `memory_limit`: DuckDB's, e.g. "2GB".
        """
        self.path = Path(path)
        self.memory_limit = memory_limit
        self.threads = threads
        self.lock_timeout = lock_timeout
        self.staging_dir = Path(staging_dir) if staging_dir is not None else None

    def __repr__(self) -> str:
        return f"LocalWarehouse({str(self.path)!r})"

    def normalize_type(self, type_name: str) -> str:
        """DuckDB's canonical spelling of a type (see the module's `normalize_type`)."""
        return normalize_type(type_name)

    # ------------------------------------------------------------------ connection
    @contextmanager
    def _connect(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the DuckDB file, retrying while another process holds its lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise WarehouseError(f"{what}: cannot open {self.path}: {e}") from e
                if time.monotonic() >= deadline:
                    raise WarehouseTimeout(
                        f"{what}: DuckDB file {self.path} stayed locked by another process "
                        f"for {self.lock_timeout:.0f} s; giving up ({e})"
                    ) from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
        try:
            # TIMESTAMP WITH TIME ZONE values are instants: never shift them to a local zone.
            con.execute("SET TimeZone = 'UTC'")
            # Large INSERT ... SELECT FROM read_parquet need far less memory without it.
            con.execute("SET preserve_insertion_order = false")
            if self.memory_limit:
                con.execute(f"SET memory_limit = {_literal(self.memory_limit)}")
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self, what: str, failure: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on the file: committed when the block ends, rolled back when it
        raises (a DuckDB error becomes a WarehouseError naming `what`)."""
        with self._connect(what) as con:
            try:
                con.execute("BEGIN TRANSACTION")
                yield con
                con.execute("COMMIT")
            except BaseException as e:
                with suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if isinstance(e, duckdb.Error):
                    raise WarehouseError(f"{what}: {failure}: {e}") from e
                raise

    # ------------------------------------------------------------------ load
    def load(
        self,
        target: TargetTable,
        batches: Iterable[pa.RecordBatch],
        start: dt.date | None,
        end: dt.date | None,
        mode: LoadMode = "replace",
        merge_outside: bool = False,
    ) -> LoadResult:
        """Stage every batch, then atomically replace partitions [start, end] (inclusive; None: open)."""
        t0 = time.monotonic()
        check_mode(target, mode, merge_outside)
        stream = BatchStream(target, batches, start, end, merge_outside)
        with spool(stream, _staging_type, self.staging_dir) as (staged, nbytes):
            added, retired = self._apply(target, staged, start, end, mode)
        return LoadResult(
            rows=stream.rows,
            bytes=nbytes,
            chunks=stream.chunks,
            seconds=time.monotonic() - t0,
            rows_by_partition=dict(sorted(stream.rows_by_partition.items())),
            added_columns=added,
            retired_columns=retired,
        )

    def _apply(
        self,
        target: TargetTable,
        staged: Path | None,
        start: dt.date | None,
        end: dt.date | None,
        mode: LoadMode,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The swap, in one transaction; returns the columns added and the retired ones."""
        name = target.qualified_name
        ref = f"{quote(target.dataset)}.{quote(target.name)}"
        with self._transaction(name, "load failed") as con:
            added = _ensure_table(con, target)
            retired = retired_columns(_columns(con, target.dataset, target.name) or {}, target)
            date_range = day_range(quote(PARTITION_COLUMN), start, end)
            source = f"read_parquet({_literal(str(staged))})" if staged else None
            carried = bool(source and retired and target.primary_key)
            if carried:
                replaced = day_range(f"t.{quote(PARTITION_COLUMN)}", start, end) if mode == "replace" else "TRUE"
                _carry_retired(con, ref, source, target, retired, replaced)
            con.execute(f"DELETE FROM {ref} WHERE {date_range}")
            if mode == "upsert" and source:
                # Staged keys that live in another partition: the row moved to a loaded day.
                keys = " AND ".join(
                    f"s.{quote(k)} = {ref}.{quote(k)}" for k in target.primary_key
                )
                con.execute(f"DELETE FROM {ref} WHERE EXISTS (SELECT 1 FROM {source} s WHERE {keys})")
            if source:
                cols = [c.name for c in target.columns]
                insert_cols = ", ".join(
                    quote(c) for c in [*cols, PARTITION_COLUMN, LOADED_AT_COLUMN, *(retired if carried else ())]
                )
                select_cols = ", ".join(
                    [
                        *(f"CAST(s.{quote(c.name)} AS {c.local_type})" for c in target.columns),
                        f"s.{quote(PARTITION_COLUMN)}",
                        "CURRENT_TIMESTAMP",
                        *(f"c.{quote(r)}" for r in (retired if carried else ())),
                    ]
                )
                joined = f"{source} s"
                if carried:
                    on = " AND ".join(f"c.{quote(k)} = s.{quote(k)}" for k in target.primary_key)
                    joined += f" LEFT JOIN {_CARRIED} c ON {on}"
                dedup = ""
                if mode == "upsert":
                    pk = ", ".join(f"s.{quote(k)}" for k in target.primary_key)
                    dedup = (
                        f" QUALIFY row_number() OVER (PARTITION BY {pk} "
                        f"ORDER BY s.{quote(PARTITION_COLUMN)} DESC) = 1"
                    )
                con.execute(
                    f"INSERT INTO {ref} ({insert_cols}) "
                    f"SELECT {select_cols} FROM {joined}{dedup}"
                )
            return added, retired

    # ------------------------------------------------------------------ reads
    def columns(self, dataset: str, table: str) -> dict[str, str] | None:
        """Column name -> DuckDB type of an existing table, in order; None if absent."""
        if not self.path.exists():
            return None
        with self._connect(f"{dataset}.{table}") as con:
            return _columns(con, dataset, table)

    def count_by_partition(
        self, dataset: str, table: str, start: dt.date | None, end: dt.date | None
    ) -> dict[dt.date, int]:
        """Rows per partition date in [start, end] (None: open; dates without rows are omitted)."""
        rows = self._select(
            dataset, table,
            f"SELECT {quote(PARTITION_COLUMN)}, COUNT(*) FROM {quote(dataset)}.{quote(table)} "
            f"WHERE {day_range(quote(PARTITION_COLUMN), start, end)} GROUP BY 1 ORDER BY 1",
        )
        return {d: int(n) for d, n in rows}

    def max_key(self, dataset: str, table: str, column: str) -> int | None:
        """The largest value of an integer key column (None: no table or no rows)."""
        rows = self._select(dataset, table, f"SELECT MAX({quote(column)}) FROM {quote(dataset)}.{quote(table)}")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def digests(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> dict[Any, Digest]:
        """Per day (or key-hash bucket of one day): rows and hash sums (see base.Warehouse.digests)."""
        sql = canonical.digest_sql("duckdb", digest, scope, day=quote(PARTITION_COLUMN),
                                   **_canonical_source(dataset, table, digest, scope, absent))
        return {g: Digest(int(n), int(k or 0), int(v or 0)) for g, n, k, v in self._select(dataset, table, sql)}

    def canonical_rows(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> list[tuple]:
        """The rows of one day's key-hash buckets with their canonical fields."""
        sql = canonical.rows_sql("duckdb", digest, scope, **_canonical_source(dataset, table, digest, scope, absent))
        return self._select(dataset, table, sql)

    def _select(self, dataset: str, table: str, sql: str) -> list[tuple]:
        """Rows of a query on one table; none when the file or the table does not exist."""
        if not self.path.exists():
            return []
        with self._connect(f"{dataset}.{table}") as con:
            if _columns(con, dataset, table) is None:
                return []
            try:
                return con.execute(sql).fetchall()
            except duckdb.Error as e:
                raise WarehouseError(f"{dataset}.{table}: query failed: {e}") from e

    def query(self, sql: str) -> pa.Table:
        """Run a DuckDB query and return the rows."""
        with self._connect("query") as con:
            try:
                rel = con.sql(sql)
                if rel is None:  # a statement without a result
                    return pa.table({})
                fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
                return fetch()
            except duckdb.Error as e:
                raise WarehouseError(f"query failed: {e}") from e

    # ------------------------------------------------------------------ writes
    def delete_partitions_before(self, dataset: str, table: str, before: dt.date) -> int:
        """Delete rows of partitions older than `before`; returns rows deleted."""
        if not self.path.exists():
            return 0
        with self._connect(f"{dataset}.{table}") as con:
            if _columns(con, dataset, table) is None:
                return 0
            try:
                row = con.execute(
                    f"DELETE FROM {quote(dataset)}.{quote(table)} "
                    f"WHERE {quote(PARTITION_COLUMN)} < ?",
                    [before],
                ).fetchone()
            except duckdb.Error as e:
                raise WarehouseError(f"{dataset}.{table}: delete failed: {e}") from e
        return int(row[0]) if row else 0

    def create_view(self, dataset: str, name: str, sql: str) -> None:
        """Create or replace a view from a DuckDB query."""
        with self._connect(f"{dataset}.{name}") as con:
            try:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(dataset)}")
                con.execute(f"CREATE OR REPLACE VIEW {quote(dataset)}.{quote(name)} AS {sql}")
            except duckdb.Error as e:
                raise WarehouseError(f"{dataset}.{name}: cannot create view: {e}") from e

    # ------------------------------------------------------------------ change capture
    def stage_changes(self, dataset: str, changes: list[TableChanges]) -> StagedChanges:
        """The changes, kept in memory until the commit (see base.ChangeWarehouse)."""
        return StagedChanges(dataset, changes)

    def discard_changes(self, staged: StagedChanges) -> None:
        """Nothing was written."""

    def apply_changes(
        self,
        dataset: str,
        stream: str,
        changes: list[TableChanges],
        positions: Mapping[str, str],
        expected: Mapping[str, str | None],
    ) -> None:
        self.commit_changes(stream, self.stage_changes(dataset, changes), positions, expected)

    def commit_changes(
        self, stream: str, staged: StagedChanges, positions: Mapping[str, str], expected: Mapping[str, str | None]
    ) -> None:
        """Merge each table's changes and store the positions in one transaction (see
        base.ChangeWarehouse)."""
        dataset = staged.dataset
        what = f"{dataset}.{CDC_POSITIONS_TABLE}"
        with self._transaction(what, "change batch failed") as con:
            pos_ref = _ensure_positions(con, dataset)
            stored = dict(con.execute(
                f"SELECT table_name, position FROM {pos_ref} WHERE stream = ?", [stream]).fetchall())
            for table, want in expected.items():
                if stored.get(table) != want:
                    raise PositionConflict(
                        f"{dataset}.{table}: change capture expected position {want}, found "
                        f"{stored.get(table)}: another writer applied changes meanwhile; nothing written"
                    )
            for i, change in enumerate(staged.changes):
                _merge_changes(con, change, f"_plex_etl_cdc_{i}")
            for table, position in positions.items():
                con.execute(f"DELETE FROM {pos_ref} WHERE stream = ? AND table_name = ?", [stream, table])
                con.execute(f"INSERT INTO {pos_ref} VALUES (?, ?, ?, CURRENT_TIMESTAMP)",
                            [stream, table, position])

    def cdc_positions(self, dataset: str, stream: str) -> dict[str, str]:
        """Table -> stored position text of `stream`."""
        rows = self._select(
            dataset, CDC_POSITIONS_TABLE,
            f"SELECT table_name, position FROM {quote(dataset)}.{quote(CDC_POSITIONS_TABLE)} "
            f"WHERE stream = {_literal(stream)}",
        )
        return {t: p for t, p in rows}

    def drop_cdc_position(self, dataset: str, stream: str, table: str) -> None:
        """Forget a table's position."""
        if self.cdc_positions(dataset, stream).get(table) is None:
            return
        with self._connect(f"{dataset}.{CDC_POSITIONS_TABLE}") as con:
            con.execute(
                f"DELETE FROM {quote(dataset)}.{quote(CDC_POSITIONS_TABLE)} WHERE stream = ? AND table_name = ?",
                [stream, table],
            )


def _canonical_source(
    dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...]
) -> dict[str, Any]:
    """The FROM, WHERE and column references of a reconciliation query on one table."""
    day = f"{quote(PARTITION_COLUMN)} = DATE '{scope.day.isoformat()}'" if scope.day else None
    ref = {c.name: None if c.name in absent else quote(c.name) for c in digest.columns}
    return {"source": f"{quote(dataset)}.{quote(table)}", "where": day, "ref": ref}


# ---------------------------------------------------------------------- staging leftovers
STAGING_PREFIX = "plex_etl_"
STAGING_OWNER_FILE = "owner"
STAGING_FILE = "stage.parquet"
STALE_STAGING_AGE = dt.timedelta(hours=6)


def claim_staging(folder: Path, max_age: dt.timedelta = STALE_STAGING_AGE) -> list[Path]:
    """Mark `folder` (a load's staging folder) as this process's, then remove the leftovers of
    killed loads beside it (see `remove_stale_staging`); returns those removed."""
    (folder / STAGING_OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return remove_stale_staging(folder.parent, max_age=max_age, keep=folder)


def _owner_is_dead(folder: Path) -> bool:
    """True when the folder's owner file names a process of this host that no longer runs."""
    try:
        host, pid = (folder / STAGING_OWNER_FILE).read_text().split()
        if host != socket.gethostname():
            return False  # another machine or container sharing the directory: age decides
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _is_staging(folder: Path) -> bool:
    """A folder holding nothing but what a load puts in its staging folder."""
    try:
        return folder.is_dir() and {c.name for c in folder.iterdir()} <= {STAGING_OWNER_FILE, STAGING_FILE}
    except OSError:
        return False


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    with suppress(OSError):
        times += [child.stat().st_mtime for child in folder.iterdir()]
    return max(times)


def remove_stale_staging(
    directory: str | Path | None = None,
    max_age: dt.timedelta = STALE_STAGING_AGE,
    keep: Path | None = None,
) -> list[Path]:
    """Remove staging folders (`plex_etl_<dataset>_<table>_*`) that a killed load left in
    `directory` (default: the system temp dir): those whose owner process (same host) is gone,
    and any unchanged for `max_age`. A running load's folder has a live owner and keeps
    changing. Returns the folders removed."""
    root = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    cutoff = time.time() - max_age.total_seconds()
    removed: list[Path] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX) and _is_staging(p)]
    except OSError:
        return removed
    for folder in candidates:
        if keep is not None and folder == keep:
            continue
        try:
            stale = _owner_is_dead(folder) or _newest_change(folder) < cutoff
        except OSError:
            continue  # removed meanwhile
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


# ---------------------------------------------------------------------- helpers
def _staging_type(f: pa.Field) -> pa.DataType:
    # DuckDB decimals stop at 38 digits and it reads wider Parquet decimals as DOUBLE:
    # stage them as exact decimal text, cast to the local type on insert.
    if pa.types.is_decimal(f.type) and f.type.precision > _MAX_DUCKDB_DECIMAL:
        return pa.string()
    return f.type


# The local staging file is written once, read once by DuckDB, on this machine. Dictionary
# encoding was half the writer's CPU (~0.55 of 1.1 s per 1M bench rows) and the statistics
# (~0.1 s) are never read (the merge scans every row): without either, zstd writes in ~0.45 s
# and its file shrinks (25 MB instead of 41; lz4 would save another ~0.1 s for 56 MB); DuckDB
# reads it as fast (docs/benchmarks.md, *The local warehouse's side of a load*).
LOCAL_PARQUET: Mapping[str, Any] = {"compression": "zstd", "use_dictionary": False, "write_statistics": False}


@contextmanager
def spool(
    stream: BatchStream,
    staged_type: Callable[[pa.Field], pa.DataType],
    staging_dir: str | Path | None = None,
    parquet: Mapping[str, Any] = LOCAL_PARQUET,
) -> Iterator[tuple[Path | None, int]]:
    """Consume `stream` into one Parquet file, one row group per chunk (memory stays flat),
    in a per-load staging folder; yields (file, bytes), file None when no row was read.

    The stream is exhausted (the source's snapshot released) before the caller's body runs.
    `staged_type(field)` gives each column's staged Arrow type (values are cast to it);
    `parquet`: options of pyarrow's ParquetWriter (codec, encodings).
    The folder is `plex_etl_<dataset>_<table>_*` under `staging_dir` (default: the system
    temp dir), claimed with an `owner` file (see `claim_staging`) and removed on exit.
    Shared by the local and the BigQuery warehouse."""
    target = stream.target
    if staging_dir is not None:
        Path(staging_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f"{STAGING_PREFIX}{target.dataset}_{target.name}_", dir=staging_dir
    ) as tmp:
        path = Path(tmp) / STAGING_FILE
        claim_staging(Path(tmp))
        nbytes = _write_parquet(stream, path, staged_type, parquet)
        yield (path if stream.chunks else None), nbytes


def _write_parquet(
    stream: BatchStream, path: Path, staged_type: Callable[[pa.Field], pa.DataType], parquet: Mapping[str, Any]
) -> int:
    """Write every batch as one row group of a Parquet file; returns its size in bytes."""
    name = stream.target.qualified_name
    schema = stream.schema
    staged_schema = pa.schema([f.with_type(staged_type(f)) for f in schema])
    writer: pq.ParquetWriter | None = None
    try:
        for batch in stream:
            if staged_schema != schema:
                batch = pa.RecordBatch.from_arrays(
                    [
                        stage_array(col, f.type)
                        for col, f in zip(batch.columns, staged_schema, strict=True)
                    ],
                    schema=staged_schema,
                )
            with _staging_errors(name):
                if writer is None:
                    # Microsecond timestamps: what BigQuery and DuckDB read exactly.
                    writer = pq.ParquetWriter(path, staged_schema, coerce_timestamps="us", **parquet)
                writer.write_batch(batch)
    finally:
        if writer is not None:
            with _staging_errors(name):
                writer.close()
    return path.stat().st_size if writer is not None else 0


@contextmanager
def _staging_errors(table: str) -> Iterator[None]:
    """A failed write of the staging file (disk full, ...) raises, naming the table."""
    try:
        yield
    except (OSError, pa.ArrowException) as e:
        raise WarehouseError(f"{table}: cannot write the staging file: {e}") from e


def _canonical_type(con: duckdb.DuckDBPyConnection, type_name: str, table: str) -> str:
    try:
        row = con.execute(f"SELECT typeof(CAST(NULL AS {type_name}))").fetchone()
    except duckdb.Error as e:
        raise WarehouseError(f"{table}: invalid DuckDB type {type_name!r}: {e}") from e
    return str(row[0]) if row else type_name


def _columns(con: duckdb.DuckDBPyConnection, dataset: str, table: str) -> dict[str, str] | None:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [dataset, table],
    ).fetchall()
    return {name: str(type_) for name, type_ in rows} if rows else None


_CARRIED = "_plex_etl_carried"  # the retired values of the rows a load replaces (a temporary table)


def _carry_retired(con: duckdb.DuckDBPyConnection, ref: str, source: str, target: TargetTable,
                   retired: tuple[str, ...], replaced: str) -> None:
    """Inside the load's transaction, before its deletes: the retired columns of every row it is
    about to replace (a staged key, where `replaced` holds: the loaded days, or any day for an
    upsert, whose key delete reaches every day), one per key (the latest day), kept
    to be handed to the rows that replace them. Only rows holding a value are kept."""
    keys = [quote(k) for k in target.primary_key]
    match = " AND ".join(f"s.{k} = t.{k}" for k in keys)
    values = " OR ".join(f"t.{quote(r)} IS NOT NULL" for r in retired)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_CARRIED} AS SELECT {', '.join(f't.{k}' for k in keys)}, "
        f"{', '.join(f't.{quote(r)}' for r in retired)} FROM {ref} t "
        f"WHERE ({replaced}) AND ({values}) "
        f"AND EXISTS (SELECT 1 FROM {source} s WHERE {match}) "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(f't.{k}' for k in keys)} "
        f"ORDER BY t.{quote(PARTITION_COLUMN)} DESC) = 1"
    )


def _ensure_table(con: duckdb.DuckDBPyConnection, target: TargetTable) -> tuple[str, ...]:
    """Create the table, or check its types and add the missing columns; returns those."""
    name = target.qualified_name
    ref = f"{quote(target.dataset)}.{quote(target.name)}"
    existing = _columns(con, target.dataset, target.name)
    if existing is None:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(target.dataset)}")
        defs = [f"{quote(c.name)} {c.local_type}" for c in target.columns]
        defs += [
            f"{quote(PARTITION_COLUMN)} DATE NOT NULL",
            f"{quote(LOADED_AT_COLUMN)} TIMESTAMP WITH TIME ZONE",
        ]
        con.execute(f"CREATE TABLE {ref} ({', '.join(defs)})")
        if target.description:
            con.execute(f"COMMENT ON TABLE {ref} IS {_literal(target.description)}")
        return ()
    if target.description:
        con.execute(f"COMMENT ON TABLE {ref} IS {_literal(target.description)}")
    added: list[str] = []
    for c in target.columns:
        want = _canonical_type(con, c.local_type, name)
        have = existing.get(c.name)
        if have is None:
            con.execute(f"ALTER TABLE {ref} ADD COLUMN {quote(c.name)} {c.local_type}")
            added.append(c.name)
        elif have != want:
            raise WarehouseError(
                f"{name}: column {c.name} has type {have} in the warehouse but {want} in the "
                f"catalog; type changes are not applied automatically"
            )
    return tuple(added)


# ---------------------------------------------------------------------- change capture helpers
def _ensure_positions(con: duckdb.DuckDBPyConnection, dataset: str) -> str:
    ref = f"{quote(dataset)}.{quote(CDC_POSITIONS_TABLE)}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(dataset)}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {ref} (stream VARCHAR NOT NULL, table_name VARCHAR NOT NULL, "
        "position VARCHAR NOT NULL, updated_at TIMESTAMP WITH TIME ZONE)"
    )
    return ref


def _merge_changes(con: duckdb.DuckDBPyConnection, change: TableChanges, name: str) -> None:
    """Inside the caller's transaction: delete the changed and deleted keys, insert the rows."""
    target = change.target
    ref = f"{quote(target.dataset)}.{quote(target.name)}"
    _ensure_table(con, target)
    upserts = cdc_staging_table(change.upserts, target)
    upserts = pa.table({
        f.name: stage_array(upserts[f.name].combine_chunks(), _staging_type(f)) for f in upserts.schema
    })
    pk = target.primary_key
    keys = pa.concat_tables([
        upserts.select(list(pk)),
        change.deletes.select(list(pk)).cast(upserts.select(list(pk)).schema),
    ])
    con.execute("SELECT 1").fetchall()  # finish the pending result: DuckDB 2 refuses register() before
    con.register(f"{name}_rows", upserts)
    con.register(f"{name}_keys", keys)
    try:
        match = " AND ".join(f"k.{quote(c)} = {ref}.{quote(c)}" for c in pk)
        con.execute(f"DELETE FROM {ref} WHERE EXISTS (SELECT 1 FROM {quote(name + '_keys')} k WHERE {match})")
        if upserts.num_rows:
            cols = ", ".join(quote(c) for c in [*(c.name for c in target.columns), PARTITION_COLUMN, LOADED_AT_COLUMN])
            select = ", ".join([
                *(f"CAST({quote(c.name)} AS {c.local_type})" for c in target.columns),
                quote(PARTITION_COLUMN), "CURRENT_TIMESTAMP",
            ])
            con.execute(f"INSERT INTO {ref} ({cols}) SELECT {select} FROM {quote(name + '_rows')}")
    finally:
        con.unregister(f"{name}_rows")
        con.unregister(f"{name}_keys")
