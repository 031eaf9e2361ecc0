"""What the capture worker (plex_etl/cdc/worker.py) reports per table, to whom, and its settings.

Apart from the worker so that the Dagster side (plex_etl/defs/cdc.py), which the code location
imports, reads them without loading the binary-log reader, the database driver or Arrow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class TableReport:
    """What the worker did to one table since its last report."""

    table: str
    changes: Counter = field(default_factory=Counter)  # row changes read: inserts, updates, deletes
    rows_merged: int = 0
    keys_deleted: int = 0
    days: set = field(default_factory=set)  # days (_etl_partition_date) of the rows merged
    lag_seconds: float | None = None  # the largest lag of the changes applied (None: none applied)
    position: str | None = None  # the binary-log position the table has reached
    first_copy_rows: int | None = None  # rows of a first copy (or resync) in this report
    stopped: str | None = None  # why the table's capture stopped, or the worker's failure
    batches: int = 0
    caught_up: bool = True
    reported_at: float = 0.0  # monotonic time of the report

    @property
    def changed(self) -> bool:
        """Rows of the table were copied, merged or deleted since the last report."""
        return self.batches > 0


class Reporter(Protocol):
    """Where the worker's reports go (the Dagster instance); must not block."""

    def report(self, reports: Sequence[TableReport]) -> None: ...

    def close(self, timeout: float) -> None: ...


@dataclass
class WorkerSettings:
    max_events: int = 20_000  # row changes per batch while catching up
    max_seconds: float = 10.0  # reading time per batch while catching up
    linger: float = 0.25  # while live, a batch collects changes this long before it is applied
    report_seconds: float = 60.0  # at most one report per table this often while its rows change
    idle_report_seconds: float = 600.0  # at least one report per table this often (its freshness)
    state_seconds: float = 30.0  # while idle, the stored states are read again this often (resync requests)
    retry_seconds: tuple[float, float] = (5.0, 60.0)  # the first and the longest wait after a failure
    lag_warn_seconds: float = 300.0  # the capture check warns above this lag
    position_seconds: float = 30.0  # a position moved only by other tables' transactions is stored this often
