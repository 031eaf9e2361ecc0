"""MySQL versus warehouse row counts per table over a window of days: what `make demo` prints."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan
from plex_etl.extract.spec import read_bounds, replicated_table
from plex_etl.extract.sql import partition_query
from plex_etl.mysql import connect
from plex_etl.reconcile import error_text
from plex_etl.sources import Source
from plex_etl.warehouse.base import Warehouse


@dataclass(frozen=True)
class TableCount:
    source: str
    table: str
    strategy: str
    mysql: int
    warehouse: int
    error: str = ""  # why the table could not be counted (the others still are)

    @property
    def equal(self) -> bool:
        return not self.error and self.mysql == self.warehouse


def count_tables(
    source: Source,
    catalog: Catalog,
    plan: SourcePlan,
    warehouse: Warehouse,
    dataset: str,
    start: dt.date,
    today: dt.date,
) -> list[TableCount]:
    """Rows of the window [start, today] (snapshots: today) in MySQL and in the warehouse."""
    counts = []
    first_partition = plan.first_partition(today)
    with connect(source) as connection:
        for p in sorted(plan.included, key=lambda p: p.table):
            try:
                spec = replicated_table(catalog, plan, p.table, dataset)
                lo, hi = read_bounds(spec, today if p.strategy == "snapshot" else start, today, today,
                                     first_partition)
                query = partition_query(spec, lo, hi)
                mysql = sum(int(n) for _, n in connection.execute(sa.text(query.count_sql)))
                landed = warehouse.count_by_partition(dataset, spec.target.name, lo, hi)
            except Exception as exc:  # one table's failure (renamed in MySQL, ...) is its row, not the end
                connection.rollback()
                counts.append(TableCount(source.name, p.table, p.strategy, 0, 0, error_text(exc)))
                continue
            counts.append(TableCount(source.name, p.table, p.strategy, mysql, sum(landed.values())))
    return counts


def format_counts(counts: list[TableCount]) -> str:
    width = max(len(f"{c.source}.{c.table}") for c in counts)
    lines = [f"{'table':<{width}}  {'strategy':<8}  {'mysql':>10}  {'warehouse':>10}  equal"]
    for c in counts:
        if c.error:
            lines.append(f"{c.source + '.' + c.table:<{width}}  {c.strategy:<8}  cannot compare: {c.error}")
            continue
        lines.append(
            f"{c.source + '.' + c.table:<{width}}  {c.strategy:<8}  {c.mysql:>10,}  {c.warehouse:>10,}  "
            f"{'yes' if c.equal else 'NO'}"
        )
    total_m, total_w = sum(c.mysql for c in counts), sum(c.warehouse for c in counts)
    lines.append(f"{'total':<{width}}  {'':<8}  {total_m:>10,}  {total_w:>10,}  "
                 f"{'yes' if all(c.equal for c in counts) else 'NO'}")
    return "\n".join(lines)
