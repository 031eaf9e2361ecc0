"""Analytical views: written once in BigQuery SQL (`views/*.sql`), translated for DuckDB.

`{dataset}` in a view's SQL stands for the warehouse dataset. The local warehouse gets
the same view through sqlglot's BigQuery -> DuckDB translation, so there is one text
to maintain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from plex_etl.catalog.naming import LATEST_SUFFIX

VIEWS_DIR = Path(__file__).parent / "views"
_TABLE = re.compile(r"\{dataset\}\.([A-Za-z0-9_]+)")


@dataclass(frozen=True)
class View:
    name: str
    sql: str  # BigQuery dialect, with {dataset}

    @property
    def description(self) -> str:
        lines = [line[3:] for line in self.sql.splitlines() if line.startswith("-- ")]
        return lines[0] if lines else self.name

    @property
    def tables(self) -> tuple[str, ...]:
        """Warehouse tables read (a `_latest` view counts as its snapshot table)."""
        names = {m.removesuffix(LATEST_SUFFIX) for m in _TABLE.findall(self.sql)}
        return tuple(sorted(names))

    def render(self, dataset: str, warehouse_kind: str) -> str:
        sql = self.sql.replace("{dataset}", dataset)
        if warehouse_kind == "bigquery":
            return sql
        import sqlglot  # only the local warehouse needs it: Definitions load without

        return sqlglot.transpile(sql, read="bigquery", write="duckdb", pretty=True)[0]


def load_views(directory: Path = VIEWS_DIR) -> list[View]:
    return [View(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]
