"""Dagster resources: the MySQL sources and the warehouse."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from plex_etl.catalog.naming import DEFAULT_DATASET
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import Source, get_source
from plex_etl.warehouse.base import Warehouse

if TYPE_CHECKING:  # loading Definitions needs no SQLAlchemy
    from sqlalchemy import Connection, Engine

DEFAULT_LOCAL_WAREHOUSE = "warehouse/plex_etl.duckdb"


class MySQLResource(dg.ConfigurableResource):
    """The MySQL sources of `sources.yaml` (passwords come from the env vars or secrets it names)."""

    sources_file: str | None = Field(
        default=None, description="Path of sources.yaml; default: the config directory's."
    )

    def source(self, name: str) -> Source:
        return get_source(name, Path(self.sources_file) if self.sources_file else None)

    def engine(self, name: str) -> "Engine":
        """A SQLAlchemy (PyMySQL) engine for the source: sessions in UTC, utf8mb4."""
        return create_engine(self.source(name))

    @contextmanager
    def connect(self, name: str) -> Iterator["Connection"]:
        """A connection whose connection errors name the source and never the password."""
        with connect(self.source(name)) as connection:
            yield connection


class WarehouseResource(dg.ConfigurableResource):
    """Where tables land: BigQuery when a GCP project is configured, else the local DuckDB file."""

    kind: str = Field(default="auto", description="bigquery, local, or auto (bigquery if project set)")
    project: str | None = Field(default=None, description="GCP project of the BigQuery dataset")
    dataset: str = Field(default=DEFAULT_DATASET, description="BigQuery dataset / local schema")
    location: str | None = Field(default=None, description="BigQuery location, e.g. US")
    api_endpoint: str | None = Field(
        default=None, description="BigQuery API endpoint override (a private endpoint or emulator)"
    )
    local_path: str = Field(default=DEFAULT_LOCAL_WAREHOUSE, description="DuckDB file (local kind)")
    local_memory_limit: str = Field(
        default="128MB", description="DuckDB memory limit of the local warehouse (it spills beyond it)"
    )
    local_threads: int = Field(default=1, description="DuckDB threads of the local warehouse")
    request_timeout_seconds: float | None = Field(
        default=300.0,
        description="BigQuery: give up retrying an API call or a job after this many seconds, and wait "
        "at most this long for a job (logging every 30 s while it runs); None: the client's defaults "
        "(retries for up to 10 minutes, waits for a job without limit)",
    )

    @property
    def resolved_kind(self) -> str:
        if self.kind == "auto":
            return "bigquery" if self.project else "local"
        if self.kind not in ("bigquery", "local"):
            raise dg.DagsterInvalidConfigError(
                f"warehouse kind must be bigquery, local or auto, not {self.kind!r}", [], None
            )
        return self.kind

    def get(self) -> Warehouse:
        if self.resolved_kind == "bigquery":
            from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client

            if not self.project:
                raise dg.Failure("the bigquery warehouse needs a GCP project (PLEX_ETL_GCP_PROJECT)")
            client = bigquery_client(self.project, self.location, self.api_endpoint)
            if self.request_timeout_seconds is None:
                return BigQueryWarehouse(client, location=self.location)
            from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

            seconds = self.request_timeout_seconds
            return BigQueryWarehouse(
                client,
                location=self.location,
                retry=DEFAULT_RETRY.with_timeout(seconds),
                job_retry=DEFAULT_JOB_RETRY.with_timeout(seconds),
                job_timeout=seconds,
            )
        from plex_etl.warehouse.local import LocalWarehouse

        os.makedirs(os.path.dirname(os.path.abspath(self.local_path)), exist_ok=True)
        # Capped so that a load's swap-in does not dwarf the streaming extraction's flat memory
        # (docs/benchmarks.md: 607 MB at DuckDB's defaults, 360 MB capped, for 1M rows).
        return LocalWarehouse(self.local_path, memory_limit=self.local_memory_limit, threads=self.local_threads)


def warehouse_from_environment() -> WarehouseResource:
    """The warehouse the environment selects (see plex_etl.definitions for the variables)."""
    return WarehouseResource(
        kind=os.getenv("PLEX_ETL_WAREHOUSE", "auto"),
        project=os.getenv("PLEX_ETL_GCP_PROJECT") or None,
        dataset=os.getenv("PLEX_ETL_DATASET", DEFAULT_DATASET),
        location=os.getenv("PLEX_ETL_BIGQUERY_LOCATION") or None,
        api_endpoint=os.getenv("PLEX_ETL_BIGQUERY_ENDPOINT") or None,
        local_path=os.getenv("PLEX_ETL_LOCAL_WAREHOUSE", DEFAULT_LOCAL_WAREHOUSE),
    )
