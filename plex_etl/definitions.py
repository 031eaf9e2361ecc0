"""The Dagster code location: `dagster dev -m plex_etl.definitions`."""

import dagster as dg

defs = dg.Definitions(assets=[])
