"""What the data says about a table's date columns: one bounded aggregate query per table.

Discovery proposes partition dates from these figures, not from column names alone: a
column that is mostly NULL, holds dates decades older than the table's other dates (a
birth date) or dates in the future (an expiry) is not the day a row was created.

The query reads the whole table only when it is small (`FULL_SCAN_ROWS`); a larger table
is sampled in `SLICES` primary-key ranges of `SLICE_ROWS` rows each (index range reads,
spread over the key's span when its first column is numeric, else its head and tail), so
a 30M-row table costs about 100k row reads whatever its number of date columns. The
oldest date of a column that leads an index is read exactly (one index dive) even then.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plex_etl.catalog.model import Table
from plex_etl.catalog.relationships import quote

if TYPE_CHECKING:  # imported where used: loading Definitions needs no SQLAlchemy
    import sqlalchemy as sa

DATE_TYPES = ("date", "datetime", "timestamp")
FULL_SCAN_ROWS = 500_000
SLICES = 10
SLICE_ROWS = 10_000
_NUMERIC = ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal")
_VALID = "'1000-01-01'"  # zero dates ('0000-00-00') count as NULL: they land as NULL


@dataclass(frozen=True)
class DateProfile:
    """Figures for one date column over the rows read (`rows`: all of them, or the sample)."""

    column: str
    rows: int
    non_null: int
    future: int  # values after the day after today
    oldest: dt.date | None
    newest: dt.date | None
    mean: dt.date | None
    sampled: bool = False

    @property
    def null_ratio(self) -> float:
        return 1 - self.non_null / self.rows if self.rows else 0.0

    @property
    def future_ratio(self) -> float:
        return self.future / self.non_null if self.non_null else 0.0


def date_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.data_type in DATE_TYPES]


def _day(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _rows_read(table: Table, columns: list[str]) -> tuple[str, bool]:
    """The FROM clause: the table itself when small, else a bounded sample of it."""
    name = quote(table.name)
    if table.row_estimate <= FULL_SCAN_ROWS:
        return name, False
    cols = ", ".join(quote(c) for c in columns)
    key = table.primary_key
    if not key:
        return f"(SELECT {cols} FROM {name} LIMIT {SLICES * SLICE_ROWS}) s", True
    first = quote(key[0])
    order = ", ".join(quote(k) for k in key)
    if table.column(key[0]).data_type in _NUMERIC:
        slices = [
            f"(SELECT {cols} FROM {name} WHERE {first} >= (SELECT MIN({first}) + (MAX({first}) - MIN({first})) "
            f"* {i} / {SLICES} FROM {name}) ORDER BY {order} LIMIT {SLICE_ROWS})"
            for i in range(SLICES)
        ]
    else:
        half = SLICES * SLICE_ROWS // 2
        desc = ", ".join(f"{quote(k)} DESC" for k in key)
        slices = [
            f"(SELECT {cols} FROM {name} ORDER BY {order} LIMIT {half})",
            f"(SELECT {cols} FROM {name} ORDER BY {desc} LIMIT {half})",
        ]
    return "(" + " UNION ALL ".join(slices) + ") s", True


def profile_dates(
    connection: sa.Connection, table: Table, columns: list[str] | None = None, today: dt.date | None = None
) -> dict[str, DateProfile]:
    """MIN, MAX, mean, non-NULL and future counts of `columns` (default: every date column)."""
    columns = date_columns(table) if columns is None else list(columns)
    if not columns:
        return {}
    source, sampled = _rows_read(table, columns)
    leading = {i.columns[0] for i in table.indexes}
    parts = ["COUNT(*)"]
    for c in columns:
        q = quote(c)
        valid = f"CASE WHEN {q} >= {_VALID} THEN {q} END"
        oldest = (
            f"(SELECT MIN({q}) FROM {quote(table.name)} WHERE {q} >= {_VALID})" if sampled and c in leading
            else f"MIN({valid})"
        )
        parts += [
            f"COUNT({valid})", f"SUM({q} >= :horizon)", oldest, f"MAX({valid})", f"FROM_DAYS(AVG(TO_DAYS({valid})))",
        ]
    import sqlalchemy as sa

    horizon = (today or dt.date.today()) + dt.timedelta(days=2)
    row = connection.execute(sa.text(f"SELECT {', '.join(parts)} FROM {source}"), {"horizon": horizon}).one()
    rows = int(row[0] or 0)
    found = {}
    for i, c in enumerate(columns):
        non_null, future, oldest, newest, mean = row[1 + 5 * i: 6 + 5 * i]
        found[c] = DateProfile(
            column=c, rows=rows, non_null=int(non_null or 0), future=int(future or 0),
            oldest=_day(oldest), newest=_day(newest), mean=_day(mean), sampled=sampled,
        )
    return found
