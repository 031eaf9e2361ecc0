"""Server flavour: detected on the real MariaDB, and each version-specific path chosen from the
version strings MariaDB, Oracle MySQL and Percona Server print."""

import pytest

from plex_etl.extract.access import runner
from plex_etl.flavor import MARIADB, MYSQL, PERCONA, UnsupportedServerError, detect_flavor, parse_flavor
from plex_etl.mysql import connect


def test_the_machines_mariadb_is_detected(demo_sources):
    with connect(demo_sources["plex"]) as connection:
        flavor = detect_flavor(runner(connection))
    assert flavor.product == MARIADB
    assert flavor.version >= (10, 0, 0)
    assert flavor.counts_with_found_rows and flavor.snapshot_position_from_status
    assert flavor.binary_log_status_statement == "SHOW MASTER STATUS"


@pytest.mark.parametrize(
    ("version", "comment", "product", "found_rows", "snapshot_status", "status_sql"),
    [
        ("10.11.19-MariaDB-0+deb12u1", "Debian 12", MARIADB, True, True, "SHOW MASTER STATUS"),
        ("5.5.5-10.6.18-MariaDB-log", "MariaDB Server", MARIADB, True, True, "SHOW MASTER STATUS"),
        ("11.4.2-MariaDB", "mariadb.org binary distribution", MARIADB, True, True, "SHOW MASTER STATUS"),
        ("5.7.44-log", "MySQL Community Server (GPL)", MYSQL, True, False, "SHOW MASTER STATUS"),
        ("8.0.16", "MySQL Community Server - GPL", MYSQL, True, False, "SHOW MASTER STATUS"),
        ("8.0.36", "MySQL Community Server - GPL", MYSQL, False, False, "SHOW MASTER STATUS"),
        ("8.4.3", "MySQL Community Server - GPL", MYSQL, False, False, "SHOW BINARY LOG STATUS"),
        ("8.0.35-27", "Percona Server (GPL), Release 27, Revision 2f8eeab2", PERCONA, False, True,
         "SHOW MASTER STATUS"),
        ("8.0.32-google", "(Google)", MYSQL, False, False, "SHOW MASTER STATUS"),
    ],
)
def test_each_server_takes_its_documented_path(version, comment, product, found_rows, snapshot_status, status_sql):
    flavor = parse_flavor(version, comment)
    assert flavor.product == product
    assert flavor.counts_with_found_rows is found_rows
    assert flavor.snapshot_position_from_status is snapshot_status
    assert flavor.binary_log_status_statement == status_sql


@pytest.mark.parametrize("version", ["5.6.51", "banana"])
def test_unknown_or_too_old_servers_are_refused_by_name(version):
    with pytest.raises(UnsupportedServerError, match=version):
        parse_flavor(version, "")


class _Recorder:
    """A raw connection that records its statements and answers the status queries."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name, self.log = name, log

    def query(self, sql: str) -> None:
        self.log.append((self.name, sql))

    def store_result(self):
        rows = {"SHOW BINARY LOG STATUS": ((b"binlog.000042", b"4711"),),
                "SHOW MASTER STATUS": ((b"binlog.000042", b"4711"),),
                "SHOW STATUS LIKE 'binlog_snapshot_%'": ((b"Binlog_snapshot_file", b"binlog.000042"),
                                                          (b"Binlog_snapshot_position", b"4711"))}[self.log[-1][1]]

        class _Result:
            def fetch_row(self, maxrows: int = 0, how: int = 0):
                return rows

        return _Result()

    def close(self) -> None:
        self.log.append((self.name, "close"))


@pytest.mark.parametrize(("version", "comment", "expected"), [
    ("10.11.19-MariaDB", "", [("snapshot", "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"),
                              ("snapshot", "SHOW STATUS LIKE 'binlog_snapshot_%'")]),
    ("8.4.3", "MySQL Community Server - GPL", [
        ("lock", "SET SESSION lock_wait_timeout = 10"),
        ("lock", "LOCK TABLES `apppedidoslineas` READ, `apppedidos` READ"),
        ("snapshot", "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"),
        ("lock", "SHOW BINARY LOG STATUS"),
        ("lock", "close"),
    ]),
])
def test_each_flavour_takes_its_snapshot_position_path(monkeypatch, version, comment, expected):
    """The statements of a first copy's start position, by flavour: MariaDB's status variables;
    Oracle MySQL 8.4's read lock on the copied table and its day's parent, on a second connection,
    around the snapshot's start (run for real on MariaDB in test_cdc.py, with MySQL 8.0's
    statement)."""
    import plex_etl.cdc.apply as apply

    log: list[tuple[str, str]] = []
    connections = iter([_Recorder("snapshot", log), _Recorder("lock", log)])
    monkeypatch.setattr(apply, "raw_connection", lambda _source: next(connections))
    snapshot = apply._SnapshotPosition(parse_flavor(version, comment), ["apppedidoslineas", "apppedidos"])
    snapshot.connect(None).query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    assert log == expected
    assert str(snapshot.position) == "binlog.000042:4711"
