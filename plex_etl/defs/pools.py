"""Concurrency pools: each source's `pool_limit` (sources.yaml) applied to the Dagster instance.

Every table asset of a source runs in the pool `mysql_<source>` (`assets.pool_name`), so at
most `pool_limit` extractions read that MySQL server at once. Dagster keeps pool limits in
the instance's storage, not in code: `plex-etl pools` writes them (the same as
`dagster instance concurrency set mysql_<source> <limit>` for each source). Run it once per
instance and again after changing a `pool_limit`; it is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from plex_etl.defs.assets import pool_name
from plex_etl.defs.dagster_private import set_pool_limit
from plex_etl.sources import Source


def pool_limits(sources: Iterable[Source]) -> dict[str, int]:
    return {pool_name(source): source.pool_limit for source in sources}


def apply_pool_limits(instance: dg.DagsterInstance, sources: Iterable[Source]) -> dict[str, int]:
    """Set each source's pool to its `pool_limit`; returns {pool: limit}."""
    limits = pool_limits(sources)
    for pool, limit in limits.items():
        set_pool_limit(instance, pool, limit)
    return limits
