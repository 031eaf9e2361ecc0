"""The BigQuery warehouse.

A table load costs at most two BigQuery jobs, whatever its row count:
1. it creates a staging table (unique name, expiring after a few hours as a safety net; an
   API call, not a job) and spools the whole stream into one local Parquet file (one row
   group per chunk: memory stays flat; the folder is claimed and cleaned like the local
   warehouse's, `local.spool`). The stream is exhausted before any job exists, so the MySQL
   snapshot ends when the read ends, never during a BigQuery wait;
2. ONE load job sends the file into the staging table (CREATE_NEVER: a staging table that
   vanished fails the load instead of being recreated empty); its `output_rows` must equal
   the rows read;
3. ONE script (after the new columns are added to the target, which BigQuery cannot do in a
   transaction) runs one transaction: DELETE the loaded partitions (a partition filter
   alone), for upsert find the partitions outside them that hold a staged key and delete
   those keys there only, INSERT ... SELECT FROM staging. A transaction aborted by a
   concurrent one is retried with jittered backoff.
JSON and BIGNUMERIC are staged as STRING and converted in the swap (`_from_staging`): BigQuery
loads no JSON from Parquet, and decimal text keeps every BIGNUMERIC digit whatever a Parquet
decimal256 reader does; a value that does not convert fails the load naming table, column and
value. Every job is waited for by `wait_for_job` (a log line every 30 s, cancelled after
`job_timeout`). The staging table is dropped afterwards, also on failure. Partition
decorators are not used.

Every wait is bounded and interruptible (plex_etl/waits.py): each client call runs in a helper
thread while the caller waits in slices (a SIGTERM/SIGINT exception surfaces within 0.1 s),
each HTTP request has a timeout (`http_timeout`), an API call (with its retries) is given up
after the retry's deadline (`api_timeout`, request_timeout_seconds), a job wait or a download
of rows after `job_timeout`, the Parquet upload (as long as it takes) when a request stays
silent for the HTTP timeout (the client retries it up to 6 times); then a WarehouseTimeout
names the table and the operation.

The endpoint is the only thing that differs for tests (a local emulator): see
`bigquery_client(..., api_endpoint=...)`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime as dt
import logging
import random
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from plex_etl import canonical, waits
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
    WarehouseValueError,
    cdc_staging_table,
    check_mode,
    day_range,
    retired_columns,
    stage_array,
)
from plex_etl.warehouse.local import spool

log = logging.getLogger(__name__)

STAGING_INFIX = "__staging_"
STAGING_EXPIRATION = dt.timedelta(hours=6)
# Types BigQuery can cluster by.
CLUSTERABLE = {"INT64", "STRING", "DATE", "DATETIME", "TIMESTAMP", "BOOL", "NUMERIC",
               "BIGNUMERIC", "GEOGRAPHY"}
_ALIASES = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "DECIMAL": "NUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
    "RECORD": "STRUCT",
}
_TYPE_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")
# Messages of a transaction aborted by a concurrent one (retrying it is safe: the script
# is idempotent, it re-reads the staging table).
_CONCURRENT = ("concurrent update", "could not serialize", "transaction is aborted",
               "failed to commit")
_TRANSACTION_ATTEMPTS = 4
HTTP_TIMEOUT = 60.0  # seconds one HTTP request may go unanswered (each attempt of a call)
CANCEL_WAIT = 2.0  # seconds to wait for the cancellation of a job given up on


def bigquery_client(
    project: str,
    location: str | None,
    api_endpoint: str | None = None,
    credentials: Any = None,
) -> bigquery.Client:
    """A BigQuery client; `api_endpoint` points it elsewhere (e.g. a local emulator).

    With an endpoint and no credentials the client is anonymous (emulators ignore auth).
    """
    kwargs: dict[str, Any] = {"project": project, "location": location}
    if api_endpoint:
        from google.api_core.client_options import ClientOptions

        kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
        if credentials is None:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
    if credentials is not None:
        kwargs["credentials"] = credentials
    return bigquery.Client(**kwargs)


def service_account_credentials(key: str) -> Any:
    """Credentials from a base64-encoded service-account key (the form dagster-gcp takes)."""
    import base64
    import json

    from google.oauth2 import service_account

    try:
        info = json.loads(base64.b64decode(key, validate=True))
    except ValueError:
        # The error must not quote the key.
        raise ValueError("the GCP credentials are not a base64-encoded service-account key (JSON)") from None
    return service_account.Credentials.from_service_account_info(info)


def parse_type(type_: str) -> tuple[str, int | None, int | None]:
    """'NUMERIC(20, 0)' -> ('NUMERIC', 20, 0); 'STRING(10)' -> ('STRING', 10, None)."""
    m = _TYPE_RE.match(type_)
    if not m:
        raise ValueError(f"unsupported BigQuery column type {type_!r}")
    base = m.group(1).upper()
    base = _ALIASES.get(base, base)
    p = int(m.group(2)) if m.group(2) else None
    s = int(m.group(3)) if m.group(3) else None
    return base, p, s


def normalize_type(type_: str) -> str:
    """Canonical spelling of a BigQuery column type: 'numeric(20,0)' -> 'NUMERIC(20, 0)'."""
    base, p, s = parse_type(type_)
    if p is None:
        return base
    return f"{base}({p})" if s is None else f"{base}({p}, {s})"


def field_type(f: bigquery.SchemaField) -> str:
    """The type of a schema field, spelled like WarehouseColumn.bigquery_type."""
    base = _ALIASES.get(f.field_type.upper(), f.field_type.upper())
    if base in ("NUMERIC", "BIGNUMERIC") and f.precision is not None:
        return f"{base}({f.precision}, {f.scale or 0})"
    if base in ("STRING", "BYTES") and f.max_length is not None:
        return f"{base}({f.max_length})"
    if f.mode == "REPEATED":
        return f"ARRAY<{base}>"
    return base


def schema_field(name: str, type_: str, mode: str = "NULLABLE") -> bigquery.SchemaField:
    base, p, s = parse_type(type_)
    kwargs: dict[str, Any] = {}
    if base in ("NUMERIC", "BIGNUMERIC"):
        kwargs.update(precision=p, scale=s if p is not None else None)
    elif base in ("STRING", "BYTES"):
        kwargs.update(max_length=p)
    return bigquery.SchemaField(name, base, mode=mode, **kwargs)


def _q(identifier: str) -> str:
    if "`" in identifier or "\\" in identifier:
        raise WarehouseError(f"invalid BigQuery identifier {identifier!r}")
    return f"`{identifier}`"


class BigQueryWarehouse:
    """Warehouse in BigQuery (production)."""

    kind = "bigquery"

    def __init__(
        self,
        client: bigquery.Client,
        location: str | None = None,
        *,
        retry: Retry = DEFAULT_RETRY,
        job_retry: Retry | None = DEFAULT_JOB_RETRY,
        job_timeout: float | None = None,
        staging_expiration: dt.timedelta = STAGING_EXPIRATION,
        staging_dir: str | Path | None = None,
    ) -> None:
        """`staging_dir`: where each load spools its Parquet file before the one load job
        (default: the system temp dir; leftovers of killed loads are removed by the next)."""
        self.client = client
        self.project = client.project
        self.location = location or client.location
        self.retry = retry
        self.job_retry = job_retry
        self.job_timeout = job_timeout
        # An API call with its retries is given up after the retry's deadline; each HTTP request
        # in it after HTTP_TIMEOUT (at most that deadline).
        self.api_timeout: float = retry.timeout if retry is not None and retry.timeout is not None else 600.0
        self.http_timeout = min(HTTP_TIMEOUT, self.api_timeout)
        self.staging_expiration = staging_expiration
        self.staging_dir = staging_dir
        # Datasets and tables known to be ready for change batches (no lookup per batch).
        self._cdc_ready: set[str] = set()
        self.cdc_inline_bytes = CDC_INLINE_BYTES  # a change batch below this is inlined (see stage_changes)

    def __repr__(self) -> str:
        return f"BigQueryWarehouse(project={self.project!r}, location={self.location!r})"

    def normalize_type(self, type_name: str) -> str:
        """BigQuery's canonical spelling ('integer' -> 'INT64', 'NUMERIC(20,0)' -> 'NUMERIC(20, 0)');
        a type the parser does not know (ARRAY<...>, STRUCT<...>) is only upper-cased."""
        try:
            return normalize_type(type_name)
        except ValueError:
            return " ".join(type_name.upper().split())

    # ------------------------------------------------------------------ plumbing
    def _table_id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset}.{table}"

    def _ref(self, dataset: str, table: str) -> str:
        return _q(self._table_id(dataset, table))

    def _api(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One client call (an API request and its retries), bounded and interruptible (see the
        module docstring); `what` names the table and the operation."""
        return bounded(what, self.api_timeout, fn, *args, retry=self.retry, timeout=self.http_timeout, **kwargs)

    def _rows(self, what: str, job: Any) -> list[Any]:
        """The rows of a finished query job, fetched within `job_timeout`."""
        return bounded(what, self.job_timeout,
                       lambda: list(job.result(retry=self.retry, timeout=self.job_timeout or self.http_timeout)))

    def _get_table(self, dataset: str, table: str) -> bigquery.Table | None:
        try:
            return self._api(f"{dataset}.{table}: reading the table's metadata", self.client.get_table,
                             self._table_id(dataset, table))
        except gexc.NotFound:
            return None

    def _run(self, sql: str, *, job_retry: Retry | str | None = "default", what: str | None = None) -> Any:
        what = what or _summary(sql)
        job = self._api(f"{what}: starting the query job", self.client.query, sql, location=self.location,
                        job_retry=self.job_retry if job_retry == "default" else job_retry)
        wait_for_job(job, what, timeout=self.job_timeout, retry=self.retry, cancel_timeout=self.http_timeout)
        return job

    def drop_stale_staging_tables(
        self, dataset: str, older_than: dt.timedelta = STAGING_EXPIRATION
    ) -> list[str]:
        """Drop the staging tables (`<table>__staging_<hex>`) of `dataset` created more than
        `older_than` ago: leftovers of killed loads, should their expiration not have removed
        them. A running load's staging table is younger. Returns the names dropped."""
        cutoff = dt.datetime.now(dt.UTC) - older_than
        dropped: list[str] = []
        try:
            tables = self._api(f"{dataset}: listing tables",
                               lambda **kw: list(self.client.list_tables(f"{self.project}.{dataset}", **kw)))
        except gexc.NotFound:
            return []
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}: cannot list tables: {_message(e)}") from e
        for item in tables:
            if STAGING_INFIX not in item.table_id:
                continue
            created = item.created or self._get_table(dataset, item.table_id).created  # type: ignore[union-attr]
            if created is None or created > cutoff:
                continue
            try:
                self._api(f"{dataset}.{item.table_id}: dropping the stale staging table", self.client.delete_table,
                          self._table_id(dataset, item.table_id), not_found_ok=True)
            except gexc.GoogleAPIError as e:
                raise WarehouseError(f"{dataset}.{item.table_id}: cannot drop: {_message(e)}") from e
            log.info("%s.%s: dropped stale staging table (created %s)", dataset, item.table_id, created)
            dropped.append(item.table_id)
        return dropped

    def _ensure_dataset(self, dataset: str) -> None:
        """Create the dataset if it does not exist yet. Looked up first: creating needs the
        project-level bigquery.datasets.create permission (even with exists_ok), which a loader
        granted only on its dataset lacks, and the emulator fails concurrent creations."""
        try:
            self._api(f"{dataset}: reading the dataset", self.client.get_dataset, f"{self.project}.{dataset}")
            return
        except gexc.NotFound:
            pass
        ds = bigquery.Dataset(f"{self.project}.{dataset}")
        if self.location:
            ds.location = self.location
        self._api(f"{dataset}: creating the dataset", self.client.create_dataset, ds, exists_ok=True)

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
        name = target.qualified_name
        check_mode(target, mode, merge_outside)
        stream = BatchStream(target, batches, start, end, merge_outside)
        for c in target.columns:
            try:
                parse_type(c.bigquery_type)
            except ValueError as e:
                raise WarehouseError(f"{name}: column {c.name}: {e}") from e
        try:
            existing = self._get_table(target.dataset, target.name)
            retired = retired_columns([f.name for f in existing.schema], target) if existing is not None else ()
            if existing is not None:
                _check_types(target, existing)  # fail before staging anything
            self._ensure_dataset(target.dataset)
            staging_name = f"{target.name}{STAGING_INFIX}{uuid.uuid4().hex[:8]}"
            staging = bigquery.Table(
                self._table_id(target.dataset, staging_name),
                schema=[*_staging_fields(target), bigquery.SchemaField(PARTITION_COLUMN, "DATE")],
            )
            staging.expires = dt.datetime.now(dt.UTC) + self.staging_expiration
            staging.description = f"plex_etl staging for {name}; dropped after the load"
            self._api(f"{name}: creating staging table {staging_name}", self.client.create_table, staging)
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{name}: cannot prepare the load: {_message(e)}") from e

        staged_types = _staged_arrow_types(target)
        try:
            # The whole stream goes to a local spool first: the source's snapshot ends when
            # the read ends, before any BigQuery job is created or waited for.
            # Snappy: the codec BigQuery's Parquet loads have always accepted; dictionaries kept,
            # the file crosses the network.
            with spool(stream, lambda f: staged_types.get(f.name, f.type), self.staging_dir,
                       parquet={"compression": "snappy"}) as (path, nbytes):
                if path is not None:
                    self._load_staging(target, staging, path, nbytes, stream.rows)
            added = self._ensure_target(target)
            try:
                self._replace(target, staging_name, start, end, mode, retired)
            except BaseException:
                if existing is None:  # created by this load: leave no empty table behind
                    self._drop_if_empty(target)
                raise
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{name}: load failed: {_message(e)}") from e
        finally:
            try:
                self._api(f"{name}: dropping staging table {staging_name}", self.client.delete_table, staging,
                          not_found_ok=True)
            except Exception as e:  # the expiration removes it eventually
                log.warning("%s: could not drop staging table %s: %s", name, staging_name, e)
        return LoadResult(
            rows=stream.rows,
            bytes=nbytes,
            chunks=stream.chunks,
            seconds=time.monotonic() - t0,
            rows_by_partition=dict(sorted(stream.rows_by_partition.items())),
            added_columns=added,
            retired_columns=retired,
        )

    def _load_staging(
        self, target: TargetTable, staging: bigquery.Table, path: Path, size: int, rows: int
    ) -> None:
        """One Parquet load job of the spooled file into the (existing) staging table, then
        the check that it holds every row read."""
        name = target.qualified_name
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            # A staging table that vanished fails the load instead of being recreated empty.
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        try:
            with path.open("rb") as file:
                # A large upload takes long: no limit on the whole, each request's silence bounded.
                job = bounded(f"{name}: uploading {size:,} bytes of Parquet into staging", None,
                              self.client.load_table_from_file, file, staging, job_config=config, size=size,
                              location=self.location, timeout=self.http_timeout)
            wait_for_job(job, f"{name}: Parquet load into staging", timeout=self.job_timeout,
                         retry=self.retry, cancel_timeout=self.http_timeout)
        except gexc.GoogleAPIError as e:
            raise WarehouseError(
                f"{name}: Parquet load into staging table {staging.table_id} failed: {_message(e)}"
            ) from e
        staged = job.output_rows
        if staged is None:  # not reported: count
            what = f"{name}: counting the rows of staging table {staging.table_id}"
            job = self._run(f"SELECT COUNT(*) FROM {self._ref(target.dataset, staging.table_id)}", what=what)
            staged = int(self._rows(what, job)[0][0])
        check_staged_rows(name, staging.table_id, int(staged), rows)

    def _ensure_target(self, target: TargetTable) -> tuple[str, ...]:
        """Create the target table, or add its missing columns; returns the added ones."""
        table = self._get_table(target.dataset, target.name)
        if table is None:
            table = bigquery.Table(
                self._table_id(target.dataset, target.name),
                schema=[
                    *_data_fields(target),
                    bigquery.SchemaField(PARTITION_COLUMN, "DATE", mode="REQUIRED"),
                    bigquery.SchemaField(LOADED_AT_COLUMN, "TIMESTAMP"),
                ],
            )
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
            )
            cluster = _clustering(target)
            if cluster:
                table.clustering_fields = cluster
            if target.description:
                table.description = target.description
            try:
                self._api(f"{target.qualified_name}: creating the table", self.client.create_table, table)
                return ()
            except gexc.Conflict:  # created meanwhile by a concurrent load
                table = self._get_table(target.dataset, target.name)
                if table is None:
                    raise WarehouseError(
                        f"{target.qualified_name}: table vanished while being created"
                    ) from None
        _check_types(target, table)
        have = {f.name for f in table.schema}
        new = [f for f in _data_fields(target) if f.name not in have]
        changed = []
        if new:
            table.schema = [*table.schema, *new]
            changed.append("schema")
        if target.description and table.description != target.description:
            table.description = target.description
            changed.append("description")
        if changed:
            self._api(f"{target.qualified_name}: updating the table's {' and '.join(changed)}",
                      self.client.update_table, table, changed)
        return tuple(f.name for f in new)

    def _replace(
        self, target: TargetTable, staging_name: str, start: dt.date | None, end: dt.date | None,
        mode: str, retired: tuple[str, ...] = (),
    ) -> None:
        sql = replace_script(
            self._ref(target.dataset, target.name), self._ref(target.dataset, staging_name),
            target, start, end, mode, retired,
        )
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                self._run(sql, job_retry=None, what=f"{target.qualified_name}: replacing partitions from staging")
                return
            except gexc.GoogleAPIError as e:
                text = _message(e).lower()
                if attempt == _TRANSACTION_ATTEMPTS or not any(c in text for c in _CONCURRENT):
                    self._explain_failure(target, staging_name)
                    raise
                # Jittered backoff: concurrent loads of one table must not retry in lockstep.
                delay = min(2.0 ** attempt, 30.0) * random.uniform(0.5, 1.5)
                log.info("%s: transaction aborted by a concurrent one, retrying in %.1f s: %s",
                         target.qualified_name, delay, _message(e))
                time.sleep(delay)

    def _drop_if_empty(self, target: TargetTable) -> None:
        """Drop the target table if it holds no row: a first load whose swap failed created it
        (columns cannot be created inside BigQuery's transaction), and an empty table would read as
        "loaded, nothing there". A concurrent load that landed rows meanwhile keeps it."""
        try:
            table = self._get_table(target.dataset, target.name)
            if table is not None and not table.num_rows and not table.streaming_buffer:
                self._api(f"{target.qualified_name}: dropping the empty table", self.client.delete_table, table,
                          not_found_ok=True)
        except (gexc.GoogleAPIError, WarehouseTimeout) as e:  # the failure being raised is the one to report
            log.warning("%s: could not drop the empty table created by this failed load: %s",
                        target.qualified_name, _message(e))

    def _explain_failure(self, target: TargetTable, staging_name: str) -> None:
        """After a failed swap: raise a WarehouseError naming the column and the MySQL value
        when a staged BIGNUMERIC text does not convert (else return: the caller re-raises)."""
        wide = [c.name for c in target.columns if _staged_as_text(c.bigquery_type) == "BIGNUMERIC"]
        if not wide:
            return
        probes = ", ".join(
            f"MIN(IF({_q(c)} IS NOT NULL AND SAFE_CAST({_q(c)} AS BIGNUMERIC) IS NULL, {_q(c)}, NULL))"
            f" AS {_q(c)}"
            for c in wide
        )
        try:
            what = f"{target.qualified_name}: looking for the value that does not convert"
            job = self._run(f"SELECT {probes} FROM {self._ref(target.dataset, staging_name)}",
                            job_retry=None, what=what)
            row = next(iter(self._rows(what, job)))
        except (gexc.GoogleAPIError, WarehouseError, StopIteration):
            return
        for c in wide:
            if row[c] is not None:
                raise WarehouseValueError(
                    f"{target.qualified_name}: column {c}: MySQL value {row[c]} does not convert "
                    f"to BIGNUMERIC in this warehouse; target left unchanged"
                )

    # ------------------------------------------------------------------ reads
    def columns(self, dataset: str, table: str) -> dict[str, str] | None:
        """Column name -> BigQuery type (e.g. 'NUMERIC(20, 0)'), in order; None if absent."""
        try:
            t = self._get_table(dataset, table)
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}.{table}: cannot read schema: {_message(e)}") from e
        if t is None:
            return None
        return {f.name: field_type(f) for f in t.schema}

    def count_by_partition(
        self, dataset: str, table: str, start: dt.date | None, end: dt.date | None
    ) -> dict[dt.date, int]:
        """Rows per partition date in [start, end] (None: open; dates without rows are omitted)."""
        part = _q(PARTITION_COLUMN)
        rows = self._select(
            dataset, table,
            f"SELECT {part} AS d, COUNT(*) AS n FROM {self._ref(dataset, table)} "
            f"WHERE {day_range(part, start, end)} GROUP BY 1 ORDER BY 1",
        )
        return {r["d"]: int(r["n"]) for r in rows}

    def max_key(self, dataset: str, table: str, column: str) -> int | None:
        """The largest value of an integer key column (None: no table or no rows)."""
        rows = self._select(dataset, table, f"SELECT MAX({_q(column)}) AS k FROM {self._ref(dataset, table)}")
        return None if not rows or rows[0]["k"] is None else int(rows[0]["k"])

    def digests(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> dict[Any, Digest]:
        """Per day (or key-hash bucket of one day): rows and hash sums (see base.Warehouse.digests)."""
        sql = canonical.digest_sql("bigquery", digest, scope, day=_q(PARTITION_COLUMN),
                                   **self._canonical_source(dataset, table, digest, scope, absent))
        return {r["g"]: Digest(int(r["n"]), int(r["k"] or 0), int(r["v"] or 0))
                for r in self._select(dataset, table, sql)}

    def canonical_rows(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...] = ()
    ) -> list[tuple]:
        """The rows of one day's key-hash buckets with their canonical fields."""
        sql = canonical.rows_sql("bigquery", digest, scope,
                                 **self._canonical_source(dataset, table, digest, scope, absent))
        return [tuple(r.values()) for r in self._select(dataset, table, sql)]

    def _canonical_source(
        self, dataset: str, table: str, digest: RowDigest, scope: Scope, absent: tuple[str, ...]
    ) -> dict[str, Any]:
        """The FROM, WHERE and column references of a reconciliation query on one table."""
        day = f"{_q(PARTITION_COLUMN)} = DATE '{scope.day.isoformat()}'" if scope.day else None
        ref = {c.name: None if c.name in absent else _q(c.name) for c in digest.columns}
        return {"source": self._ref(dataset, table), "where": day, "ref": ref}

    def _select(self, dataset: str, table: str, sql: str) -> list[Any]:
        """Rows of a query on one table; none when the table does not exist."""
        try:
            if self._get_table(dataset, table) is None:
                return []
            what = f"{dataset}.{table}: query"
            return self._rows(what, self._run(sql, what=what))
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}.{table}: query failed: {_message(e)}") from e

    def query(self, sql: str) -> pa.Table:
        """Run a BigQuery (GoogleSQL) query and return the rows."""
        try:
            job = self._run(sql)
            return bounded(f"{_summary(sql)}: reading the rows", self.job_timeout, lambda: job.result(
                retry=self.retry, timeout=self.job_timeout or self.http_timeout
            ).to_arrow(create_bqstorage_client=False))
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"query failed: {_message(e)}") from e

    # ------------------------------------------------------------------ writes
    def delete_partitions_before(self, dataset: str, table: str, before: dt.date) -> int:
        """Delete rows of partitions older than `before`; returns rows deleted."""
        try:
            if self._get_table(dataset, table) is None:
                return 0
            job = self._run(
                f"DELETE FROM {self._ref(dataset, table)} "
                f"WHERE {_q(PARTITION_COLUMN)} < DATE '{before.isoformat()}'",
                job_retry=None, what=f"{dataset}.{table}: deleting partitions before {before}",
            )
            return int(job.num_dml_affected_rows or 0)
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}.{table}: delete failed: {_message(e)}") from e

    def create_view(self, dataset: str, name: str, sql: str) -> None:
        """Create or replace a view from a BigQuery (GoogleSQL) query."""
        try:
            self._ensure_dataset(dataset)
            self._run(f"CREATE OR REPLACE VIEW {self._ref(dataset, name)} AS\n{sql}",
                      what=f"{dataset}.{name}: creating the view")
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}.{name}: cannot create view: {_message(e)}") from e

    # ------------------------------------------------------------------ change capture
    def apply_changes(
        self,
        dataset: str,
        stream: str,
        changes: list[TableChanges],
        positions: Mapping[str, str],
        expected: Mapping[str, str | None],
    ) -> None:
        self.commit_changes(stream, self.stage_changes(dataset, changes), positions, expected)

    def stage_changes(self, dataset: str, changes: list[TableChanges]) -> StagedChanges:
        """Each changed table's keys and rows where the commit reads them. A batch whose rows
        render to less than `cdc_inline_bytes` of SQL is written into the commit's script
        itself, as typed literals of the values that staging would load (no job: a batch then
        waits for one job's latency, the commit's); a larger one (a catch-up) goes to expiring
        staging tables through Parquet load jobs, run at once."""
        what = f"{dataset}.{CDC_POSITIONS_TABLE}"
        staged = StagedChanges(dataset, changes)
        try:
            if dataset not in self._cdc_ready:  # once per process, again after a failure
                self._ensure_dataset(dataset)
                self._ensure_positions(dataset)
            tables = []
            for change in changes:
                if change.target.qualified_name not in self._cdc_ready:
                    self._ensure_target(change.target)
                upserts = _staged_rows(change.target, cdc_staging_table(change.upserts, change.target))
                pk = list(change.target.primary_key)
                keys = pa.concat_tables([upserts.select(pk),
                                         change.deletes.select(pk).cast(upserts.select(pk).schema)])
                if keys.num_rows:
                    tables.append((change.target, keys, upserts))
            staged.staging = self._inline(tables) or self._stage_tables(dataset, tables)
        except gexc.GoogleAPIError as e:
            self._cdc_ready.clear()
            raise WarehouseError(f"{what}: staging a change batch failed: {_message(e)}") from e
        except BaseException:
            self._cdc_ready.clear()
            raise
        self._cdc_ready.add(dataset)
        self._cdc_ready.update(c.target.qualified_name for c in changes)
        return staged

    def _inline(self, tables: list[tuple[TargetTable, pa.Table, pa.Table]]) -> list[_Staged] | None:
        """The keys and rows as UNNEST sources of typed literals, or None when they would be
        more than `cdc_inline_bytes` of SQL or hold a type without a literal here."""
        budget = self.cdc_inline_bytes
        staged = []
        for target, keys, upserts in tables:
            fields = {f.name: f for f in _staging_fields(target)}
            sources = []
            for rows, names in ((keys, list(target.primary_key)),
                                (upserts, [*(c.name for c in target.columns), PARTITION_COLUMN])):
                if not rows.num_rows:
                    sources.append(None)
                    continue
                types = [fields[n].field_type if n in fields else "DATE" for n in names]
                source = _unnest(rows, names, types, budget)
                if source is None:
                    return None
                budget -= len(source)
                sources.append(source)
            staged.append(_Staged(target, sources[0], sources[1]))  # type: ignore[arg-type]
        return staged

    def _stage_tables(self, dataset: str, tables: list[tuple[TargetTable, pa.Table, pa.Table]]) -> list[_Staged]:
        """The keys and rows in staging tables (Parquet load jobs, run at once)."""
        jobs: list[tuple[TargetTable, concurrent.futures.Future, concurrent.futures.Future | None]] = []
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="plex_etl_cdc") as pool:
                for target, keys, upserts in tables:
                    fields = {f.name: f for f in _staging_fields(target)}
                    keys_job = pool.submit(self._cdc_stage, target, [fields[k] for k in target.primary_key], keys)
                    rows_job = pool.submit(self._cdc_stage, target, [
                        *_staging_fields(target), bigquery.SchemaField(PARTITION_COLUMN, "DATE")
                    ], upserts) if upserts.num_rows else None
                    jobs.append((target, keys_job, rows_job))
            for _, *pair in jobs:  # the first failure, once every job has ended
                for job in pair:
                    if job is not None and job.exception() is not None:
                        raise job.exception()  # type: ignore[misc]
        except BaseException:
            created = [job.result().table_id for _, *pair in jobs for job in pair
                       if job is not None and job.done() and job.exception() is None]
            self._drop_staging(dataset, created, f"{dataset}.{CDC_POSITIONS_TABLE}")
            raise
        staged = []
        for target, keys_job, rows_job in jobs:
            names = [keys_job.result().table_id] + ([rows_job.result().table_id] if rows_job is not None else [])
            staged.append(_Staged(target, *(self._ref(dataset, n) for n in names), *([None] if len(names) == 1 else []),
                                  tables=tuple(names)))
        return staged

    def discard_changes(self, staged: StagedChanges) -> None:
        """Drop the batch's staging tables (inlined batches have none)."""
        names = [name for item in staged.staging for name in item.tables]
        self._drop_staging(staged.dataset, names, f"{staged.dataset}.{CDC_POSITIONS_TABLE}")

    def commit_changes(
        self, stream: str, staged: StagedChanges, positions: Mapping[str, str], expected: Mapping[str, str | None]
    ) -> None:
        """Merge the staged changes and store the positions in one multi-statement transaction,
        which first asserts the stored positions (see base.ChangeWarehouse)."""
        dataset = staged.dataset
        what = f"{dataset}.{CDC_POSITIONS_TABLE}"
        pos_ref = self._ref(dataset, CDC_POSITIONS_TABLE)
        statements: list[str] = []
        if expected:
            # Checked in the transaction itself: no job of its own, and a batch staged while the
            # previous one committed is checked against what that commit stored.
            conditions = " AND ".join(
                f"(SELECT COUNT(*) FROM {pos_ref} WHERE stream = {_text(stream)} AND table_name = {_text(t)}"
                + (") = 0" if want is None else f" AND position = {_text(want)}) = 1")
                for t, want in sorted(expected.items())
            )
            statements.append(f"ASSERT {conditions} AS {_text(_POSITION_CONFLICT)};")
        for item in staged.staging:
            target = item.target
            ref = self._ref(target.dataset, target.name)
            match = " AND ".join(f"k.{_q(k)} = t.{_q(k)}" for k in target.primary_key)
            statements.append(f"DELETE FROM {ref} t WHERE EXISTS (SELECT 1 FROM {item.keys} k WHERE {match});")
            if item.rows is not None:
                part = _q(PARTITION_COLUMN)
                columns = ", ".join([*(_q(c.name) for c in target.columns), part, _q(LOADED_AT_COLUMN)])
                select = ", ".join([
                    *(_from_staging(_q(c.name), c.bigquery_type) for c in target.columns),
                    part, "CURRENT_TIMESTAMP()",
                ])
                statements.append(f"INSERT INTO {ref} ({columns}) SELECT {select} FROM {item.rows};")
        if positions:  # two statements whatever the number of tables: each DML statement takes a while
            tables = ", ".join(_text(t) for t in sorted(positions))
            statements.append(f"DELETE FROM {pos_ref} WHERE stream = {_text(stream)} AND table_name IN ({tables});")
            values = ", ".join(f"({_text(stream)}, {_text(t)}, {_text(p)}, CURRENT_TIMESTAMP())"
                               for t, p in sorted(positions.items()))
            statements.append(f"INSERT INTO {pos_ref} (stream, table_name, position, updated_at) VALUES {values};")
        try:
            if dataset not in self._cdc_ready:
                self._ensure_dataset(dataset)
                self._ensure_positions(dataset)
                self._cdc_ready.add(dataset)
            self._run("BEGIN TRANSACTION;\n" + "\n".join(statements) + "\nCOMMIT TRANSACTION;", job_retry=None,
                      what=f"{what}: committing a change batch")
        except gexc.GoogleAPIError as e:
            self._cdc_ready.clear()
            if _POSITION_CONFLICT in str(e):
                raise PositionConflict(
                    f"{dataset}: change capture expected the stored positions {dict(expected)}, found others: "
                    "another writer applied changes meanwhile; nothing written") from e
            raise WarehouseError(f"{what}: change batch failed: {_message(e)}") from e
        finally:
            self.discard_changes(staged)

    def _drop_staging(self, dataset: str, names: Iterable[str], what: str) -> None:
        for name in names:
            try:
                self._api(f"{dataset}.{name}: dropping the staging table", self.client.delete_table,
                          self._table_id(dataset, name), not_found_ok=True)
            except Exception as e:  # the expiration removes it eventually
                log.warning("%s: could not drop staging table %s: %s", what, name, e)

    def _cdc_stage(
        self, target: TargetTable, fields: list[bigquery.SchemaField], rows: pa.Table
    ) -> bigquery.Table:
        """A staging table holding `rows` (as `_staged_rows` gives them)."""
        name = f"{target.name}{STAGING_INFIX}{uuid.uuid4().hex[:8]}"
        table = bigquery.Table(self._table_id(target.dataset, name), schema=fields)
        table.expires = dt.datetime.now(dt.UTC) + self.staging_expiration
        table.description = f"plex_etl change-capture staging for {target.qualified_name}"
        table = self._api(f"{target.qualified_name}: creating change staging table {name}", self.client.create_table,
                          table)
        with tempfile.TemporaryDirectory(prefix=f"plex_etl_cdc_{target.name}_") as tmp:
            path = Path(tmp) / "changes.parquet"
            pq.write_table(rows, path, compression="snappy", coerce_timestamps="us")
            self._load_staging(target, table, path, path.stat().st_size, rows.num_rows)
        return table

    def _ensure_positions(self, dataset: str) -> str:
        ref = self._ref(dataset, CDC_POSITIONS_TABLE)
        if self._get_table(dataset, CDC_POSITIONS_TABLE) is None:
            table = bigquery.Table(self._table_id(dataset, CDC_POSITIONS_TABLE), schema=[
                bigquery.SchemaField("stream", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("table_name", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("position", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("updated_at", "TIMESTAMP"),
            ])
            table.description = "plex_etl change capture: the binary-log position each table has reached"
            with contextlib.suppress(gexc.Conflict):
                self._api(f"{dataset}.{CDC_POSITIONS_TABLE}: creating the table", self.client.create_table, table)
        return ref

    def cdc_positions(self, dataset: str, stream: str) -> dict[str, str]:
        """Table -> stored position text of `stream`."""
        rows = self._select(
            dataset, CDC_POSITIONS_TABLE,
            f"SELECT table_name, position FROM {self._ref(dataset, CDC_POSITIONS_TABLE)} "
            f"WHERE stream = {_text(stream)}",
        )
        return {r[0]: r[1] for r in rows}

    def drop_cdc_position(self, dataset: str, stream: str, table: str) -> None:
        """Forget a table's position."""
        if self.cdc_positions(dataset, stream).get(table) is None:
            return
        try:
            self._run(
                f"DELETE FROM {self._ref(dataset, CDC_POSITIONS_TABLE)} "
                f"WHERE stream = {_text(stream)} AND table_name = {_text(table)}",
                job_retry=None, what=f"{dataset}.{CDC_POSITIONS_TABLE}: forgetting the position of {table}",
            )
        except gexc.GoogleAPIError as e:
            raise WarehouseError(f"{dataset}.{CDC_POSITIONS_TABLE}: delete failed: {_message(e)}") from e


# ---------------------------------------------------------------------- helpers
POLL_SECONDS = 30.0
_POSITION_CONFLICT = "plex_etl: the stored change-capture positions are not the expected ones"
# A change batch below this many bytes of SQL is inlined. BigQuery takes up to 1 MB of query text;
# the emulator parses literals at ~20 ms per row of 30 columns, a cost real BigQuery does not have.
CDC_INLINE_BYTES = 128 * 1024


@dataclass(frozen=True)
class _Staged:
    """One table's part of a staged change batch: the SQL sources (a staging table, or an
    UNNEST of literals) of its keys and rows, and the staging tables to drop."""

    target: TargetTable
    keys: str
    rows: str | None
    tables: tuple[str, ...] = ()


def _staged_rows(target: TargetTable, rows: pa.Table) -> pa.Table:
    """`rows` as staged: the columns staged as text (JSON, BIGNUMERIC) converted like a load's."""
    text = _staged_arrow_types(target)
    return pa.table({
        n: stage_array(rows[n].combine_chunks(), text[n]) if n in text else rows[n] for n in rows.column_names
    })


_STRING_ESCAPES = {ord("\\"): "\\\\", ord("'"): "\\'", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                   **{c: f"\\u{c:04x}" for c in [*range(0x20), 0x7F] if c not in (9, 10, 13)}}


def _literal(value: Any, type_: str) -> str | None:
    """`value` (a staged column's Python value) as a BigQuery literal of `type_` that reads back
    exactly the value Parquet staging would load; None for a type without one here."""
    if value is None:
        return "NULL"
    base = parse_type(type_)[0]
    if base == "INT64":
        return str(int(value))
    if base == "BOOL":
        return "TRUE" if value else "FALSE"
    if base == "FLOAT64":
        return f"CAST('{value!r}' AS FLOAT64)"  # repr round-trips; nan, inf and -inf too
    if base in ("NUMERIC", "BIGNUMERIC"):
        return f"{base} '{value:f}'"
    if base == "STRING":
        return "'" + value.translate(_STRING_ESCAPES) + "'"
    if base == "BYTES":
        return f"FROM_BASE64('{base64.b64encode(value).decode()}')"
    if base == "DATE":
        return f"DATE '{value.isoformat()}'"
    if base == "DATETIME":
        return f"DATETIME '{value.isoformat(sep=' ', timespec='microseconds')}'"
    if base == "TIME":
        return f"TIME '{value.isoformat(timespec='microseconds')}'"
    if base == "TIMESTAMP":
        return f"TIMESTAMP '{value.astimezone(dt.UTC).isoformat(sep=' ', timespec='microseconds')}'"
    return None


def _unnest(rows: pa.Table, names: list[str], types: list[str], budget: int) -> str | None:
    """`UNNEST(ARRAY<STRUCT<...>>[...])` of `rows`' `names` columns of BigQuery `types`, or None
    when longer than `budget` characters or a type has no literal."""
    struct = ", ".join(f"{_q(n)} {parse_type(t)[0]}" for n, t in zip(names, types, strict=True))
    head = f"UNNEST(ARRAY<STRUCT<{struct}>>["
    parts, size = [], len(head) + 2
    columns = [rows.column(n).to_pylist() for n in names]
    for values in zip(*columns, strict=True):
        literals = [_literal(v, t) for v, t in zip(values, types, strict=True)]
        if None in literals:
            return None
        part = f"STRUCT({', '.join(literals)})"  # type: ignore[arg-type]
        size += len(part) + 2
        if size > budget:
            return None
        parts.append(part)
    return head + ", ".join(parts) + "])"


def _summary(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 80 else text[:77] + "..."


def wait_for_job(
    job: Any, what: str, *, timeout: float | None, retry: Retry = DEFAULT_RETRY, poll: float = POLL_SECONDS,
    cancel_timeout: float = HTTP_TIMEOUT,
) -> None:
    """Wait for a BigQuery job, interruptibly, logging every `poll` seconds that it is still
    running (a long job is never a silent wait); after `timeout` seconds (None: no limit) cancel
    it (waiting at most CANCEL_WAIT s for that) and raise a WarehouseTimeout naming `what` and
    the job."""
    started = time.monotonic()
    try:
        waits.call(job.result, retry=retry, timeout=timeout, what=f"{what}: waiting for BigQuery job {job.job_id}",
                   limit=timeout, log_every=poll)
    except TimeoutError as e:  # ours, or the client's (concurrent.futures.TimeoutError)
        waited = time.monotonic() - started
        with contextlib.suppress(Exception):
            waits.call(job.cancel, timeout=cancel_timeout, what=f"{what}: cancelling BigQuery job {job.job_id}",
                       limit=CANCEL_WAIT)
        raise WarehouseTimeout(
            f"{what}: BigQuery job {job.job_id} not finished after {waited:.0f} s (request_timeout_seconds: still "
            "running, or BigQuery not answering); cancel requested"
        ) from e


def bounded(what: str, limit: float | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` (a client call), waited for interruptibly and given up after `limit`
    seconds (None: no limit) with a WarehouseTimeout naming `what` (the table and the operation),
    as is a call whose retries ran out of time."""
    try:
        return waits.call(fn, *args, what=what, limit=limit, **kwargs)
    except (TimeoutError, gexc.RetryError, requests.exceptions.Timeout) as e:
        detail = "" if isinstance(e, waits.WaitTimeout) else f": {e}"  # the client's own, e.g. its retries'
        raise WarehouseTimeout(
            f"{what}: no answer from BigQuery within {limit or 0:.0f} s (request_timeout_seconds){detail}"
        ) from e


def check_staged_rows(table: str, staging: str, staged: int, read: int) -> None:
    """Raise a WarehouseError unless the staging table holds exactly the rows read."""
    if staged != read:
        raise WarehouseError(
            f"{table}: staging table {staging} holds {staged:,} rows but {read:,} were read; "
            "target left unchanged"
        )


def _message(e: gexc.GoogleAPIError) -> str:
    text = getattr(e, "message", None) or str(e)
    return text.splitlines()[0][:1000] if text else type(e).__name__


def _data_fields(target: TargetTable) -> list[bigquery.SchemaField]:
    return [schema_field(c.name, c.bigquery_type) for c in target.columns]


def _staged_as_text(type_: str) -> str | None:
    """The target type of a column staged as STRING and converted in the swap, else None.

    - JSON: batch loads of JSON columns accept only CSV, Avro and JSON files, not Parquet.
    - BIGNUMERIC: staged as exact decimal text, so no Parquet decimal256 reader (BigQuery's
      or an emulator's) can alter a value; the swap CASTs it, exactly.
    """
    base = parse_type(type_)[0]
    return base if base in ("JSON", "BIGNUMERIC") else None


def _from_staging(column: str, type_: str) -> str:
    """The swap's expression for a staged column (the one place text is converted back)."""
    kind = _staged_as_text(type_)
    if kind == "JSON":
        # MySQL accepts any JSON number; PARSE_JSON's default (exact) mode fails the whole load
        # on one beyond float64/INT64 precision, 'round' keeps the document (number rounded).
        return f"PARSE_JSON({column}, wide_number_mode => 'round')"
    if kind == "BIGNUMERIC":
        return f"CAST({column} AS BIGNUMERIC)"
    return column


def _staging_fields(target: TargetTable) -> list[bigquery.SchemaField]:
    """The data columns as staged: like the target, but JSON and BIGNUMERIC as STRING."""
    return [
        schema_field(c.name, "STRING" if _staged_as_text(c.bigquery_type) else c.bigquery_type)
        for c in target.columns
    ]


def _staged_arrow_types(target: TargetTable) -> dict[str, pa.DataType]:
    """Arrow type of the spooled columns that differ from the batches' (staged as text)."""
    return {c.name: pa.string() for c in target.columns if _staged_as_text(c.bigquery_type)}


CARRIED = "_plex_etl_carried"  # the retired values of the rows a load replaces (a temporary table)


def replace_script(
    ref: str, stg: str, target: TargetTable, start: dt.date | None, end: dt.date | None, mode: str,
    retired: tuple[str, ...] = (),
) -> str:
    """The swap: one multi-statement transaction from the staging table `stg` into `ref`.

    - the loaded range's partitions are deleted by the partition filter alone (no scan);
    - upsert: the partitions outside that range that hold a staged key are found first
      (a read of the key and partition columns only; the table is clustered by the key),
      and only those partitions are searched for the staged keys to delete;
    - the staged rows are inserted, a key staged twice once (its latest partition);
    - `retired` (columns of `ref` the load does not write), with a primary key: before the
      deletes, the retired values of the rows about to be replaced go to a temporary table
      (only rows holding one), and each inserted row takes those of its key.
    """
    cols = [_q(c.name) for c in target.columns]
    part = _q(PARTITION_COLUMN)
    keys = " AND ".join(f"s.{_q(k)} = t.{_q(k)}" for k in target.primary_key)
    pk = ", ".join(_q(k) for k in target.primary_key)
    carried = retired if target.primary_key else ()
    moved_days = (f"SET moved_days = (SELECT ARRAY_AGG(DISTINCT t.{part}) FROM {ref} t "
                  f"INNER JOIN (SELECT DISTINCT {pk} FROM {stg}) s ON {keys});")
    declare, statements, source, joined = "", [], stg, f"{stg} s"
    if carried:
        # Before anything is deleted: every day that holds a staged key (upsert), then the
        # retired values of the rows about to be replaced.
        replaced = day_range("t." + part, start, end)
        if mode == "upsert":
            statements.append(moved_days)
            replaced = f"t.{part} IN UNNEST(moved_days)"
        holding = " OR ".join(f"t.{_q(r)} IS NOT NULL" for r in carried)
        t_keys = ", ".join(f"t.{_q(k)}" for k in target.primary_key)
        statements.append(
            f"CREATE TEMP TABLE {CARRIED} AS SELECT {t_keys}, {', '.join(f't.{_q(r)}' for r in carried)} "
            f"FROM {ref} t WHERE ({replaced}) AND ({holding}) AND EXISTS (SELECT 1 FROM {stg} s WHERE {keys}) "
            f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {t_keys} ORDER BY t.{part} DESC) = 1;"
        )
    statements.append(f"DELETE FROM {ref} t WHERE {day_range('t.' + part, start, end)};")
    if mode == "upsert":
        # Variables must be declared at the start of a script, before BEGIN TRANSACTION.
        declare = "DECLARE moved_days ARRAY<DATE>;\n"
        if not carried:  # after the range's delete: only the days outside it that hold a staged key
            statements.append(moved_days)
        statements.append(f"DELETE FROM {ref} t WHERE t.{part} IN UNNEST(moved_days) "
                          f"AND EXISTS (SELECT 1 FROM {stg} s WHERE {keys});")
        source = (
            f"(SELECT * FROM {stg} WHERE TRUE QUALIFY ROW_NUMBER() OVER "
            f"(PARTITION BY {pk} ORDER BY {part} DESC) = 1)"
        )
        joined = f"{source} s"
    if carried:
        joined += f" LEFT JOIN {CARRIED} c ON " + " AND ".join(f"c.{_q(k)} = s.{_q(k)}" for k in target.primary_key)
    column_list = ", ".join([*cols, part, _q(LOADED_AT_COLUMN), *(_q(r) for r in carried)])
    select_list = ", ".join([
        *(_from_staging(f"s.{_q(c.name)}", c.bigquery_type) for c in target.columns), f"s.{part}",
        "CURRENT_TIMESTAMP()", *(f"c.{_q(r)}" for r in carried),
    ])
    return (
        declare
        + "BEGIN TRANSACTION;\n"
        + "\n".join(statements) + "\n"
        f"INSERT INTO {ref} ({column_list})\n"
        f"SELECT {select_list} FROM {joined};\n"
        "COMMIT TRANSACTION;"
    )


def _clustering(target: TargetTable) -> list[str]:
    types = {c.name: parse_type(c.bigquery_type)[0] for c in target.columns}
    fields: list[str] = []
    for key in target.primary_key[:4]:
        if types.get(key) not in CLUSTERABLE:
            break  # clustering by a prefix of the key is still useful; a gap is not
        fields.append(key)
    return fields


def _check_types(target: TargetTable, table: bigquery.Table) -> None:
    have = {f.name: field_type(f) for f in table.schema}
    for c in target.columns:
        old = have.get(c.name)
        if old is None:
            continue
        new = normalize_type(c.bigquery_type)
        if old != new:
            raise WarehouseError(
                f"{target.qualified_name}: column {c.name} has type {old} in BigQuery but "
                f"{new} in the catalog; type changes are not applied automatically"
            )


def _text(value: str) -> str:
    """A GoogleSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
