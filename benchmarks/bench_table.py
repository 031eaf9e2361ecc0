"""The issue-6 bench table: one table of N rows x 12 columns in its own database.
(`shape="lines"`: the invoice-line table of issue 26, 29 columns shaped like the demo's
`factlineas`, see LINES_DDL.)

INT PK, INT FK, DECIMAL(12,2), DOUBLE, VARCHAR(80), DATETIME, DATE, TINYINT(1), TIME,
nullable TEXT, BIGINT UNSIGNED, CHAR(8). Generated server-side from MariaDB's SEQUENCE
engine (seconds, no client round trips). TIME stays within 0..24h: connectorx 0.4.6
panics on TIME values beyond 24 hours, and the baseline must be able to read the table.
The BIGINT UNSIGNED values are 19-digit numbers below 2^63: dlt's pyarrow backend and the
plain cursor loops raise OverflowError on values at or above 2^63 (plex_etl reads them as
NUMERIC(20, 0)); the bench table must be readable by every baseline.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from plex_etl.catalog.model import Catalog, dump_catalog, load_catalog
from plex_etl.catalog.plan import SourcePlan, TablePlan
from plex_etl.extract.spec import ReplicatedTable, replicated_table
from plex_etl.sources import Source, get_source, with_database

# Parallel sessions on one server each set their own name (PLEX_ETL_BENCH_DATABASE): a rebuild
# by one must not drop the table another is reading.
DATABASE = os.environ.get("PLEX_ETL_BENCH_DATABASE", "plexetl_bench_table")
TABLE = "bench"
SOURCE = "bench"

DDL = f"""
CREATE TABLE `{TABLE}` (
  id INT NOT NULL PRIMARY KEY,
  customer_id INT NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  ratio DOUBLE NOT NULL,
  name VARCHAR(80) NOT NULL,
  created_at DATETIME NOT NULL,
  day DATE NOT NULL,
  active TINYINT(1) NOT NULL,
  duration TIME NOT NULL,
  note TEXT NULL,
  big BIGINT UNSIGNED NOT NULL,
  code CHAR(8) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

INSERT = f"""
INSERT INTO `{TABLE}`
SELECT seq,
       seq % 50000 + 1,
       ROUND((seq * 7919 % 10000000) / 100, 2),
       (seq * 104729 % 1000003) / 997.0,
       CONCAT('product name ', seq % 9973, ' ', REPEAT('x', seq % 40)),
       TIMESTAMP('2024-01-01') + INTERVAL (seq * 37 % 31536000) SECOND,
       DATE('2024-01-01') + INTERVAL (seq % 365) DAY,
       seq % 2,
       SEC_TO_TIME(seq * 13 % 86400),
       IF(seq % 3 = 0, NULL, CONCAT('note ', seq, ' - ', REPEAT('y', seq % 60))),
       9000000000000000000 + seq * 1000003,
       LPAD(HEX(seq % 4294967295), 8, '0')
FROM seq_{{lo}}_to_{{hi}}
"""


# Issue 26: a wide table like the demo's invoice lines (`factlineas`: composite key, 19 DOUBLEs,
# nullable ints, a latin1 VARCHAR(200)), 4 lines per invoice.
LINES_TABLE = "factlineas"
_AMOUNTS = [
    "PrecioUnitario", "PrecioReal", "IVA", "DesPorcentaje", "DesImporte", "ImporteCtaCte", "Adeudado",
    "PrecioNeto", "Subtotal", "DesImporteGral", "ImporteIva", "AlicuotaPercepMun", "PercepMunicipal",
    "AlicuotaPercepIIBB", "PercepIIBB", "Total", "ImporteACOS", "CantDecimal",
]
_NULLABLE_AMOUNTS = {"IVA", "DesPorcentaje"}
LINES_DDL = f"""
CREATE TABLE `{LINES_TABLE}` (
  IDComprobante INT NOT NULL,
  Orden INT NOT NULL,
  IDGlobal INT NOT NULL,
  IDProducto BIGINT NULL,
  IDRubro INT NULL,
  TipoCantidad CHAR(1) NULL,
  Cantidad INT NULL,
  Detalle VARCHAR(200) NULL,
  RefIDGlobal INT NULL,
  RefOrden INT NULL,
  IDActividad INT NULL,
  {", ".join(f"{a} DOUBLE {'NULL' if a in _NULLABLE_AMOUNTS else 'NOT NULL'}" for a in _AMOUNTS)},
  PRIMARY KEY (IDComprobante, Orden)
) ENGINE=InnoDB DEFAULT CHARSET=latin1
"""
LINES_INSERT = f"""
INSERT INTO `{LINES_TABLE}`
SELECT (seq - 1) DIV 4 + 1,
       (seq - 1) % 4 + 1,
       seq * 7 % 900000 + 1,
       IF(seq % 11 = 0, NULL, seq * 104729 % 250000 + 1),
       IF(seq % 13 = 0, NULL, seq % 120 + 1),
       IF(seq % 5 = 0, 'K', 'U'),
       IF(seq % 17 = 0, NULL, seq % 24 + 1),
       IF(seq % 7 = 0, NULL, CONCAT('Producto ', seq % 9973, ' presentacion ', REPEAT('x', seq % 50))),
       IF(seq % 9 = 0, seq * 3 % 900000 + 1, NULL),
       IF(seq % 9 = 0, seq % 4 + 1, NULL),
       IF(seq % 19 = 0, NULL, seq % 40 + 1),
       {", ".join(f"(seq * {7919 + 2 * i} % 1000003) / {97 + i}.0" for i in range(len(_AMOUNTS)))}
FROM seq_{{lo}}_to_{{hi}}
"""
SHAPES = {"bench": (TABLE, DDL, INSERT), "lines": (LINES_TABLE, LINES_DDL, LINES_INSERT)}


def bench_source(rows: int, shape: str = "bench") -> Source:
    suffix = "" if shape == "bench" else f"_{shape}"
    return with_database(get_source("plex"), f"{DATABASE}{suffix}_{rows}")


def ensure_bench_table(rows: int, log=print, shape: str = "bench") -> Source:
    """Create (or reuse, when it already holds `rows` rows) the bench table; returns its source."""
    import sqlalchemy as sa

    from plex_etl.mysql import create_engine

    table, ddl, insert = SHAPES[shape]
    source = bench_source(rows, shape)
    engine = create_engine(with_database(source, ""))
    try:
        with engine.connect() as con:
            exists = con.execute(
                sa.text("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :d AND table_name = :t"),
                {"d": source.database, "t": table},
            ).scalar()
            if exists:
                count = con.execute(sa.text(f"SELECT COUNT(*) FROM `{source.database}`.`{table}`")).scalar()
                if count == rows:
                    _write_catalog(source)
                    return source
            log(f"building {source.database}.{table} ({rows:,} rows)")
            con.execute(sa.text(f"DROP DATABASE IF EXISTS `{source.database}`"))
            con.execute(sa.text(f"CREATE DATABASE `{source.database}`"))
            con.execute(sa.text(f"USE `{source.database}`"))
            con.execute(sa.text(ddl))
            step = 500_000
            for lo in range(1, rows + 1, step):
                hi = min(rows, lo + step - 1)
                con.execute(sa.text(insert.format(lo=lo, hi=hi)))
                con.commit()
    finally:
        engine.dispose()
    _write_catalog(source)
    return source


def _catalog_path(source: Source) -> Path:
    return Path(tempfile.gettempdir()) / f"{source.database}.catalog.yaml"


def _write_catalog(source: Source) -> Catalog:
    """Discover the bench table's catalog and keep it as a file, as a source's committed catalog."""
    from plex_etl.catalog.discover import read_structure
    from plex_etl.mysql import create_engine

    engine = create_engine(source)
    try:
        with engine.connect() as con:
            catalog = read_structure(con, SOURCE, source.database)
    finally:
        engine.dispose()
    dump_catalog(catalog, _catalog_path(source))
    return catalog


def bench_spec(
    source: Source, chunk_rows: int = 100_000, dataset: str = "plexetl_bench", shape: str = "bench"
) -> ReplicatedTable:
    """The bench table as a replicated `snapshot` table: the whole table is one partition.

    The catalog comes from the file `ensure_bench_table` wrote, as a run's comes from the
    committed catalog: no discovery (nor SQLAlchemy, +16 MB) in the measured process."""
    path = _catalog_path(source)
    catalog = load_catalog(path) if path.exists() else _write_catalog(source)
    table = SHAPES[shape][0]
    plan = SourcePlan(source=SOURCE, tables={table: TablePlan(table, strategy="snapshot", chunk_rows=chunk_rows)})
    return replicated_table(catalog, plan, table, dataset=dataset)


def today() -> dt.date:
    return dt.date.today()
