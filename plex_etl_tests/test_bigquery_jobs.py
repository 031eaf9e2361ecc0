"""BigQuery jobs per table load, with the emulator behind the latency proxy of
benchmarks/bq_latency_proxy.py (each job takes `delay` seconds, as on BigQuery)."""

from __future__ import annotations

import time
import uuid

import pytest

from benchmarks.bq_latency_proxy import LatencyProxy
from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client
from plex_etl_tests import warehouse_scenarios as sc
from plex_etl_tests.bq_emulator import API_DEADLINE, JOB_TIMEOUT, Emulator, bigquery_emulator  # noqa: F401

pytestmark = pytest.mark.bigquery

DELAY = 1.0


def test_two_jobs_per_table_load_whatever_the_rows(bigquery_emulator: Emulator) -> None:  # noqa: F811
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    proxy = LatencyProxy(bigquery_emulator.endpoint, delay=DELAY)
    try:
        client = bigquery_client(bigquery_emulator.project, "US", api_endpoint=proxy.start())
        wh = BigQueryWarehouse(client, "US", retry=DEFAULT_RETRY.with_timeout(API_DEADLINE),
                               job_retry=None, job_timeout=JOB_TIMEOUT)
        h = sc.Harness(wh=wh, dataset=f"plex_test_{uuid.uuid4().hex[:8]}", staging_leftovers=list)
        t = sc.simple_target(h, "jobs")
        wh.load(t, [], sc.D1, sc.D1, mode="upsert")  # creates dataset and table
        for chunks, rows in ((1, 10), (8, 5_000)):
            before = proxy.snapshot()
            started = time.monotonic()
            batches = [sc.batch(t, sc.D1, sc.people(range(i * rows, (i + 1) * rows))) for i in range(chunks)]
            result = wh.load(t, batches, sc.D1, sc.D1, mode="upsert")
            took = time.monotonic() - started
            after = proxy.snapshot()
            assert result.chunks == chunks
            assert {k: after[k] - before[k] for k in after} == {"load": 1, "query": 1}
            assert took >= 2 * DELAY  # each job was held for DELAY seconds
        assert wh.count_by_partition(h.dataset, "jobs", sc.D1, sc.D1) == {sc.D1: 40_000}
    finally:
        proxy.stop()
