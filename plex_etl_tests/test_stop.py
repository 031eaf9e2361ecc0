"""A run stopped by SIGTERM ends within seconds at any phase and leaves no MySQL connection.

Real processes and a real server: a child reads a deliberately slow table (SLEEP per row,
through a TEMPTABLE view, so that the server works long before the first row, or through a
merged view, so that the rows come slowly), the test
sends SIGTERM and then looks for the child's connection in the server's process list.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from plex_etl.catalog.discover import read_structure
from plex_etl.catalog.model import dump_catalog
from plex_etl.mysql import connect, create_engine
from plex_etl.sources import Source, get_source, with_database

REPO = Path(__file__).resolve().parents[1]
ROWS = 400
STOP_SECONDS = 5.0  # SIGTERM to exit, and to the connection's disappearance


@pytest.fixture(scope="module")
def slow_source() -> Source:
    """`<prefix>_stop`: table `lento` (a view that sleeps 0.1 s per row, ~40 s per read) over `datos`."""
    server = get_source("plex")
    database = f"{os.environ.get('PLEX_ETL_TEST_DB_PREFIX', 'plexetl_test')}_stop"
    source = with_database(server, database)
    engine = create_engine(with_database(server, "information_schema"))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
        connection.execute(sa.text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
        # Rows of ~1 KB: the server sends a result when its network buffer (net_buffer_length,
        # 16 KB) fills or the result ends, so short rows would all arrive at the end of the read
        # and "rows flow" would race with its end. At ~1 KB a row, a buffer goes every ~1.6 s.
        connection.execute(sa.text(
            f"CREATE TABLE `{database}`.lento (id INT NOT NULL PRIMARY KEY, nombre VARCHAR(1000) NOT NULL)"
        ))
        connection.execute(sa.text(f"INSERT INTO `{database}`.lento SELECT seq, CONCAT('fila ', seq, ' ', "
                                   f"REPEAT('x', 980)) FROM `{database}`.seq_1_to_{ROWS}"))
    yield source
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
    engine.dispose()


def make_slow(source: Source, phase: str) -> None:
    """Swap table `lento` for a view with the same columns whose rows cost 0.1 s each: all
    before the first row is sent (`first_row`: a TEMPTABLE view, materialized by the server
    before it answers, the wait a long COUNT or sort also is), or row by row while they
    stream (`rows`: the sleep in the select list of a merged view)."""
    view = (
        "CREATE ALGORITHM=TEMPTABLE VIEW lento AS SELECT id, nombre FROM datos WHERE SLEEP(0.1) = 0"
        if phase == "first_row" else
        "CREATE ALGORITHM=MERGE VIEW lento AS SELECT id, IF(SLEEP(0.1) = 0, nombre, NULL) AS nombre FROM datos"
    )
    with connect(source) as connection:
        connection.execute(sa.text("RENAME TABLE lento TO datos"))
        connection.execute(sa.text(view))
        connection.commit()


def make_fast(source: Source) -> None:
    with connect(source) as connection:
        connection.execute(sa.text("DROP VIEW IF EXISTS lento"))
        connection.execute(sa.text("RENAME TABLE datos TO lento"))
        connection.commit()


def wait_for_query(source: Source, child: subprocess.Popen) -> None:
    """Until the child's read of `lento` runs on the server (still before its first row)."""
    deadline = time.monotonic() + 60
    while not any("SELECT" in info for _, info in server_threads(source, "lento")):
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()[-3000:]
        time.sleep(0.1)


def config_dir(source: Source, directory: Path) -> Path:
    """sources.yaml, catalog and plan of source `lab` (table `lento`, a snapshot) in `directory`."""
    with connect(source) as connection:
        catalog = read_structure(connection, "lab", source.database)
    directory.mkdir(parents=True, exist_ok=True)
    dump_catalog(catalog, directory / "lab.catalog.yaml")
    body = {
        "host": source.host, "port": source.port, "database": source.database, "user": source.user,
        "password": {"env": source.password.env} if source.password.env else {"secret": source.password.secret},
        "time_zone": "UTC",
    }
    (directory / "sources.yaml").write_text(yaml.safe_dump({"sources": {"lab": body}}))
    (directory / "lab.plan.yaml").write_text(yaml.safe_dump({
        "defaults": {"first_day": str(dt.date.today() - dt.timedelta(days=3))},
        "tables": {"lento": {"strategy": "snapshot", "tier": "master_daily", "chunk_rows": 20}},
    }))
    return directory


def server_threads(source: Source, marker: str) -> list[tuple[int, str]]:
    """(id, info) of the server's threads on the source's database running a statement that
    mentions `marker` (not those of a parallel session's own copy of the table)."""
    with connect(source) as connection:
        rows = connection.execute(sa.text(
            "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE :m AND DB = :d "
            "AND ID <> CONNECTION_ID()"
        ), {"m": f"%{marker}%", "d": source.database}).all()
    return [(int(r[0]), r[1]) for r in rows]


def connection_alive(source: Source, thread_id: int) -> bool:
    with connect(source) as connection:
        return connection.execute(
            sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :i"), {"i": thread_id}
        ).scalar() > 0


def wait_gone(source: Source, thread_id: int, seconds: float = STOP_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while connection_alive(source, thread_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# The child: reads `lento` with a PartitionStream, SIGTERM raising an exception in its main
# thread as Dagster's run workers and `dagster asset materialize` do (capture_interrupts).
CHILD = textwrap.dedent("""
    import datetime as dt, json, signal, sys
    from plex_etl.catalog.store import load_source_catalog
    from plex_etl.extract.spec import replicated_table
    from plex_etl.extract.stream import PartitionStream
    from plex_etl.mysql import raw_connection
    from plex_etl.sources import get_source

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)

    def connect(source):
        connection = raw_connection(source)
        print(json.dumps({"thread_id": connection.thread_id()}), flush=True)
        return connection

    catalog, plan = load_source_catalog("lab")
    stream = PartitionStream(get_source("lab"), replicated_table(catalog, plan, "lento"), dt.date.today(),
                             dt.date.today(),
                             connect=connect)
    try:
        for batch in stream:
            print(json.dumps({"rows": batch.num_rows}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"stopped": stream.rows}), flush=True)
        sys.exit(143)
""")


def start(command: list[str], config: Path, tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PLEX_ETL_CONFIG_DIR=str(config), PYTHONPATH=str(REPO),
               PLEX_ETL_WAREHOUSE="local", PLEX_ETL_LOCAL_WAREHOUSE=str(tmp_path / "warehouse.duckdb"),
               DAGSTER_HOME=str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_and_time(child: subprocess.Popen, limit: float = STOP_SECONDS) -> float:
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=limit + 30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    return time.monotonic() - sent


@pytest.mark.parametrize("phase", ["first_row", "rows"])
def test_sigterm_stops_the_reader_and_frees_its_connection(slow_source, tmp_path, phase):
    config = config_dir(slow_source, tmp_path / "config")
    make_slow(slow_source, phase)
    try:
        child = start([sys.executable, "-c", CHILD], config, tmp_path)
        thread_id = json.loads(child.stdout.readline() or "{}").get("thread_id")
        assert thread_id, child.stderr.read()[-3000:]
        if phase == "first_row":
            wait_for_query(slow_source, child)
        else:  # rows flow (one 20-row chunk per ~2 s): stop in the middle of the read
            assert "rows" in json.loads(child.stdout.readline() or "{}"), child.stderr.read()[-3000:]
        took = stop_and_time(child)
        out, err = child.communicate()
        assert took < STOP_SECONDS, f"took {took:.1f} s to stop\n{err[-3000:]}"
        assert child.returncode == 143, err[-3000:]
        assert '"stopped"' in out
        assert wait_gone(slow_source, thread_id), f"MySQL thread {thread_id} still there after the stop"
        assert not server_threads(slow_source, "lento")
    finally:
        make_fast(slow_source)


def test_sigterm_stops_plex_etl_replicate_and_its_dagster_run(slow_source, tmp_path):
    """`plex-etl replicate` forwards SIGTERM to its `dagster asset materialize` child, which
    interrupts the step; the read stops, its connection goes, both processes exit."""
    config = config_dir(slow_source, tmp_path / "config")
    make_slow(slow_source, "first_row")
    try:
        child = start([sys.executable, "-m", "plex_etl.cli", "replicate", "--source", "lab"], config, tmp_path)
        wait_for_query(slow_source, child)
        (thread_id, _), = server_threads(slow_source, "lento")
        dagster = subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True, text=True).stdout.split()
        assert dagster, "no `dagster asset materialize` child"
        took = stop_and_time(child, limit=15)
        out, err = child.communicate()
        assert took < 15, f"took {took:.1f} s to stop\n{out[-2000:]}{err[-3000:]}"
        assert child.returncode == 128 + signal.SIGTERM, out[-2000:] + err[-3000:]
        assert "stopped" in err, err[-3000:]
        assert wait_gone(slow_source, thread_id), f"MySQL thread {thread_id} still there after the stop"
        assert not server_threads(slow_source, "lento")
        for pid in dagster:  # the Dagster child is gone too (no zombie: plex-etl waited for it)
            assert not Path(f"/proc/{pid}").exists(), f"dagster child {pid} still running"
    finally:
        make_fast(slow_source)
