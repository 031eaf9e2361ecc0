"""The Dagster layer: thin factories over the plain-Python domain modules."""

import warnings

import dagster as dg

# Single-run backfill policies and pools are the documented way to load a date range in one
# run and to cap MySQL load; their beta status is not news at every import.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
