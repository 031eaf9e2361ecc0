"""Which MySQL-compatible server a source is, and which documented path each version-specific
step takes on it.

The production ERP runs Oracle MySQL; tests and the demo run MariaDB. Where the two differ, the
step asks the detected `ServerFlavor` instead of assuming one server:

- **Rows the server sent for a statement** (the extraction's row-count confirmation):
  `FOUND_ROWS()` on MariaDB and on MySQL before 8.0.17; deprecated by MySQL 8.0.17
  ("expected to be removed in a future version"), whose documentation says to count instead.
- **Binary-log position of a consistent snapshot** (the first copy of a captured table):
  MariaDB (and Percona Server) report it as the status variables
  `Binlog_snapshot_file`/`Binlog_snapshot_position` of the session that ran
  `START TRANSACTION WITH CONSISTENT SNAPSHOT`; Oracle MySQL has no such variables, and a
  position read beside the snapshot (also `performance_schema.log_status`'s) can count a
  transaction the snapshot misses (logged before InnoDB commits it). There the position is
  read while a second connection holds a brief read lock on the copied tables as the snapshot
  starts (plex_etl.cdc.apply; mysqldump's `--single-transaction --source-data` takes a global
  read lock for the same moment).
- **The binary log's status statement**: `SHOW BINARY LOG STATUS` from MySQL 8.2 (where
  `SHOW MASTER STATUS` is deprecated), `SHOW MASTER STATUS` before and on MariaDB.

Only MariaDB is installable on the test machines; the MySQL paths are chosen from the version
alone and are unit-tested on version strings (docs/design-notes.md says what ran where).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MARIADB = "mariadb"
MYSQL = "mysql"
PERCONA = "percona"


class UnsupportedServerError(RuntimeError):
    """The server is not one this project knows how to read (the message names it)."""


@dataclass(frozen=True)
class ServerFlavor:
    product: str  # MARIADB, MYSQL or PERCONA (Percona Server for MySQL)
    version: tuple[int, int, int]
    version_text: str  # what VERSION() printed, e.g. "10.11.19-MariaDB-0+deb12u1"

    @property
    def is_mariadb(self) -> bool:
        return self.product == MARIADB

    def describe(self) -> str:
        names = {MARIADB: "MariaDB", MYSQL: "MySQL", PERCONA: "Percona Server"}
        return f"{names[self.product]} {'.'.join(map(str, self.version))}"

    @property
    def counts_with_found_rows(self) -> bool:
        """Whether `FOUND_ROWS()` is the documented way to get the rows a statement sent."""
        return self.is_mariadb or self.version < (8, 0, 17)

    @property
    def snapshot_position_from_status(self) -> bool:
        """Whether the consistent snapshot reports its binary-log position itself
        (`Binlog_snapshot_file`/`_position`): MariaDB, and Percona Server from 5.6."""
        return self.is_mariadb or (self.product == PERCONA and self.version >= (5, 6, 0))

    @property
    def binary_log_status_statement(self) -> str:
        """The statement that shows the current binary log file and position."""
        if not self.is_mariadb and self.version >= (8, 2, 0):
            return "SHOW BINARY LOG STATUS"
        return "SHOW MASTER STATUS"


_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
# MySQL 5.x replication clients once saw MariaDB 10 as "5.5.5-10.x.y-MariaDB".
_MARIADB_PREFIX = "5.5.5-"


def parse_flavor(version_text: str, version_comment: str = "") -> ServerFlavor:
    """The flavour from `SELECT VERSION(), @@version_comment`."""
    text = version_text.strip()
    if "mariadb" in text.lower():
        product = MARIADB
        if text.startswith(_MARIADB_PREFIX):
            text = text[len(_MARIADB_PREFIX):]
    elif "percona" in version_comment.lower() or "percona" in text.lower():
        product = PERCONA
    else:
        product = MYSQL
    match = _VERSION.match(text)
    if match is None:
        raise UnsupportedServerError(f"cannot read the server version {version_text!r} ({version_comment!r})")
    version = (int(match[1]), int(match[2]), int(match[3]))
    if product != MARIADB and version < (5, 7, 0):
        raise UnsupportedServerError(f"MySQL {version_text} is older than 5.7, which plex_etl does not support")
    return ServerFlavor(product, version, version_text.strip())


FLAVOR_SQL = "SELECT VERSION(), @@version_comment"


def detect_flavor(run: Callable[[str], Sequence[Sequence[Any]]]) -> ServerFlavor:
    """The flavour of the server behind `run` (a statement -> its rows, see extract.access.runner)."""
    ((version, comment),) = [tuple(row) for row in run(FLAVOR_SQL)]
    return parse_flavor(_text(version), _text(comment or ""))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
