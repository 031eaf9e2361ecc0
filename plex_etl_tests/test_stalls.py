"""BigQuery behind a frozen network path (issue 26): a call fails within its configured bound
with an error naming the table and the operation, a job wait within the job's, and SIGINT or
SIGTERM ends a wait within a second. The real client against the emulator, through the frozen
TCP proxy of plex_etl_tests/frozen_proxy.py (the MySQL side: test_timeouts.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from urllib.parse import urlparse

import pytest
from google.cloud.bigquery.retry import DEFAULT_RETRY

from plex_etl.errors import is_transient
from plex_etl.warehouse.base import WarehouseTimeout
from plex_etl.warehouse.bigquery import CANCEL_WAIT, BigQueryWarehouse, bigquery_client, wait_for_job
from plex_etl_tests import warehouse_scenarios as sc
from plex_etl_tests.bq_emulator import Emulator, bigquery_emulator  # noqa: F401
from plex_etl_tests.frozen_proxy import FrozenProxy

pytestmark = pytest.mark.bigquery


def emulator_address(emulator: Emulator) -> tuple[str, int]:
    url = urlparse(emulator.endpoint)
    return url.hostname or "127.0.0.1", url.port or 80


def proxied_warehouse(emulator: Emulator, proxy: FrozenProxy, seconds: float) -> BigQueryWarehouse:
    """A warehouse whose API calls and jobs are given up after `seconds` (request_timeout_seconds)."""
    client = bigquery_client(emulator.project, "US", api_endpoint=f"http://127.0.0.1:{proxy.port}")
    return BigQueryWarehouse(client, "US", retry=DEFAULT_RETRY.with_timeout(seconds), job_retry=None,
                             job_timeout=seconds)


def test_a_frozen_bigquery_call_fails_within_its_bound_naming_table_and_operation(
    bigquery_emulator: Emulator,  # noqa: F811
) -> None:
    with FrozenProxy(emulator_address(bigquery_emulator)) as proxy:
        wh = proxied_warehouse(bigquery_emulator, proxy, 2)
        h = sc.Harness(wh=wh, dataset=f"plex_test_{uuid.uuid4().hex[:8]}", staging_leftovers=list)
        target = sc.simple_target(h, "congelada")
        wh.load(target, [sc.batch(target, sc.D1, sc.people(range(3)))], sc.D1, sc.D1)  # the path works
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(WarehouseTimeout) as error:
            wh.load(target, [sc.batch(target, sc.D1, sc.people(range(5)))], sc.D1, sc.D1)
        elapsed = time.monotonic() - started
    assert elapsed < 2 + 1, elapsed
    assert str(error.value).startswith(
        f"{h.dataset}.congelada: reading the table's metadata: no answer from BigQuery within 2 s "
        "(request_timeout_seconds)"
    ), str(error.value)
    assert is_transient(error.value)


def test_a_frozen_job_wait_gives_up_after_the_job_timeout_naming_table_and_job(
    bigquery_emulator: Emulator,  # noqa: F811
) -> None:
    with FrozenProxy(emulator_address(bigquery_emulator)) as proxy:
        wh = proxied_warehouse(bigquery_emulator, proxy, 3)
        job = wh.client.query("SELECT 1 AS uno", location="US", timeout=10)  # created, not yet waited for
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(WarehouseTimeout) as error:
            wait_for_job(job, "ds.ventas: replacing partitions from staging", timeout=3, retry=wh.retry,
                         cancel_timeout=1)
        elapsed = time.monotonic() - started
    assert 3 <= elapsed < 3 + CANCEL_WAIT + 1, elapsed
    assert str(error.value).startswith(
        f"ds.ventas: replacing partitions from staging: BigQuery job {job.job_id} not finished after 3 s"
    ), str(error.value)
    assert is_transient(error.value)


class Interrupted(Exception):
    """What Dagster's SIGTERM handler raises in a run (DagsterExecutionInterruptedError)."""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_a_frozen_bigquery_wait_within_a_second(
    bigquery_emulator: Emulator, sig: signal.Signals,  # noqa: F811
) -> None:
    def interrupted(*_: object) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        with FrozenProxy(emulator_address(bigquery_emulator)) as proxy:
            wh = proxied_warehouse(bigquery_emulator, proxy, 60)  # the bound is far: only the signal ends it
            proxy.freeze()
            timer = threading.Timer(1.0, os.kill, (os.getpid(), sig))
            started = time.monotonic()
            timer.start()
            with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else Interrupted):
                wh.columns("plex_test_frozen", "congelada")
            elapsed = time.monotonic() - started
            timer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert 1 <= elapsed < 2, elapsed
