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
from plex_etl.warehouse.base import Warehouse, WarehouseSettingsError

if TYPE_CHECKING:  # loading Definitions needs no SQLAlchemy or BigQuery client
    from google.cloud import bigquery
    from sqlalchemy import Connection, Engine

DEFAULT_LOCAL_WAREHOUSE = "warehouse/plex_etl.duckdb"
WAREHOUSE_KINDS = ("auto", "bigquery", "local")
# The environment variable behind each warehouse setting (plex_etl.definitions' docstring).
WAREHOUSE_ENV = {
    "kind": "PLEX_ETL_WAREHOUSE",
    "project": "PLEX_ETL_GCP_PROJECT",
    "dataset": "PLEX_ETL_DATASET",
    "location": "PLEX_ETL_BIGQUERY_LOCATION",
    "api_endpoint": "PLEX_ETL_BIGQUERY_ENDPOINT",
    "local_path": "PLEX_ETL_LOCAL_WAREHOUSE",
}
# A service-account key, base64-encoded as dagster-gcp's BigQueryResource takes it (optional:
# without it the client uses the environment's credentials, e.g. Workload Identity). Given to
# the resource as `dg.EnvVar`, so the UI and run config show the variable's name, never the key.
GCP_CREDENTIALS_ENV = "PLEX_ETL_GCP_CREDENTIALS"
# The settings that say where a load lands, per warehouse kind.
WHERE = {"bigquery": ("kind", "project", "dataset", "location", "api_endpoint"),
         "local": ("kind", "dataset", "local_path")}
WAREHOUSE_KEY = "warehouse"  # the resource's key in the code location (run config: resources.warehouse)


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
    gcp_credentials: str | None = Field(
        default=None,
        description=f"BigQuery: a base64-encoded service-account key, as dagster-gcp's BigQueryResource takes "
        f"it ({GCP_CREDENTIALS_ENV}); default: the environment's credentials",
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
        if self.kind not in WAREHOUSE_KINDS:
            raise WarehouseSettingsError(
                f"warehouse kind must be bigquery, local or auto, not {self.kind!r} ({WAREHOUSE_ENV['kind']})"
            )
        if self.kind == "auto":
            return "bigquery" if self.project else "local"
        return self.kind

    def check_settings(self) -> None:
        """Refuse contradictory settings, naming them (nothing may land where nobody chose)."""
        kind = self.resolved_kind
        if kind == "bigquery" and not self.project:
            raise WarehouseSettingsError(
                f"the bigquery warehouse needs a GCP project: set {WAREHOUSE_ENV['project']} "
                f"(or resources.{WAREHOUSE_KEY}.config.project)"
            )
        bigquery_only = [f"{name}={getattr(self, name)!r} ({WAREHOUSE_ENV[name]})"
                         for name in ("project", "api_endpoint") if getattr(self, name)]
        if kind == "local" and bigquery_only:
            raise WarehouseSettingsError(
                f"the local warehouse was chosen ({WAREHOUSE_ENV['kind']}=local) with BigQuery settings: "
                f"{', '.join(bigquery_only)}; unset them or choose bigquery"
            )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """In a run: refuse contradictory settings, and run config that gives some warehouse
        settings but drops others the environment sets (Dagster gives a setting left out of run
        config its default, not the code location's value: a timeout alone would silently move
        the load from BigQuery to a new local DuckDB file)."""
        self.check_settings()
        resources = (context.run.run_config if context.run else {}).get("resources") or {}
        given = set((resources.get(WAREHOUSE_KEY) or {}).get("config") or {})
        if given:
            dropped = dropped_settings(self, given, warehouse_from_environment(checked=False))
            if dropped:
                raise WarehouseSettingsError(
                    f"run config sets resources.{WAREHOUSE_KEY}.config {', '.join(sorted(given))} but not "
                    f"{', '.join(dropped)}: a setting left out of run config takes its default, not the "
                    "environment's. Give these too, or leave the warehouse out of the run config."
                )

    def get(self) -> Warehouse:
        self.check_settings()
        if self.resolved_kind == "bigquery":
            from plex_etl.warehouse.bigquery import BigQueryWarehouse

            client = self.bigquery_client()
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
        # (docs/benchmarks.md, *The local warehouse's side of a load*: 607 MB at DuckDB's defaults,
        # 360-380 MB capped, for 1M rows).
        return LocalWarehouse(self.local_path, memory_limit=self.local_memory_limit, threads=self.local_threads)


    def bigquery_client(self) -> "bigquery.Client":
        """The BigQuery client, from dagster-gcp's `BigQueryResource` (project, location,
        gcp_credentials: configured as in any Dagster project). dagster-gcp has no endpoint
        setting, so a client for `api_endpoint` (a private endpoint, the tests' emulator) is
        built by the warehouse module with the same project, location and key."""
        from plex_etl.warehouse.bigquery import bigquery_client, service_account_credentials

        key = self.gcp_credentials.get_value() if isinstance(self.gcp_credentials, dg.EnvVar) else self.gcp_credentials
        credentials = service_account_credentials(key) if key else None  # a key that is none fails here, unquoted
        if self.api_endpoint:
            return bigquery_client(self.project, self.location, self.api_endpoint, credentials)
        from dagster_gcp import BigQueryResource

        # The client reads the key when it is built; the temporary key file dagster-gcp writes
        # is gone when the context exits.
        with BigQueryResource(project=self.project, location=self.location, gcp_credentials=key).get_client() as client:
            return client


def warehouse_from_environment(checked: bool = True) -> WarehouseResource:
    """The warehouse the environment selects (WAREHOUSE_ENV); contradictory settings are refused
    with their names unless `checked` is False."""
    defaults = WarehouseResource()
    values = {name: os.getenv(variable) or getattr(defaults, name) for name, variable in WAREHOUSE_ENV.items()}
    if os.getenv(GCP_CREDENTIALS_ENV):
        values["gcp_credentials"] = dg.EnvVar(GCP_CREDENTIALS_ENV)
    warehouse = WarehouseResource(**values)
    if checked:
        warehouse.check_settings()
    return warehouse


def dropped_settings(run: WarehouseResource, given: set[str], environment: WarehouseResource) -> list[str]:
    """The settings that decide where `run`'s loads land (for its kind and the environment's) that
    its run config did not give, while the environment gives them another value: 'project
    (PLEX_ETL_GCP_PROJECT=p)'. A kind the run config names itself is the operator's choice."""
    kinds = {run.resolved_kind} if "kind" in given and run.kind != "auto" else {
        run.resolved_kind, environment.resolved_kind}
    defaults = WarehouseResource()
    names = sorted({name for kind in kinds for name in WHERE[kind]})
    return [
        f"{name} ({WAREHOUSE_ENV[name]}={getattr(environment, name)})"
        for name in names
        if name not in given and getattr(environment, name) != getattr(defaults, name)
    ]
