"""A local BigQuery emulator (local-bigquery, DuckDB-backed) for the BigQuery tests.

Not a test module. Test modules import the session fixture:

    from plex_etl_tests.bq_emulator import bigquery_emulator  # noqa: F401

The emulator lives in its own venv under `.emulator/` (it pins its own DuckDB and needs
Python >= 3.13), installed by `scripts/setup-bq-emulator.sh` when missing. If it cannot
be installed or started, the tests FAIL with the reason (they never skip).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP_SCRIPT = REPO / "scripts" / "setup-bq-emulator.sh"
EMULATOR_DIR = Path(os.environ.get("PLEX_ETL_EMULATOR_DIR", REPO / ".emulator"))
PROJECT = "test-project"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 60.0
# The client retries HTTP 5xx for up to 600 s by default: against an emulator a bug
# would look like a hang. Tests use these instead.
API_DEADLINE = 20.0
JOB_TIMEOUT = 60.0


@dataclass(frozen=True)
class Emulator:
    endpoint: str  # e.g. http://127.0.0.1:40123
    project: str
    grpc: str  # host:port of the Storage (gRPC) API
    log: Path


def _executable() -> Path:
    return EMULATOR_DIR / "venv" / "bin" / "local-bigquery"


def _installed() -> bool:
    return (EMULATOR_DIR / ".installed").exists() and _executable().exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def install() -> None:
    """Run scripts/setup-bq-emulator.sh (idempotent); pytest.fail with its output on error."""
    try:
        proc = subprocess.run(
            [str(SETUP_SCRIPT), str(EMULATOR_DIR)],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"BigQuery emulator: {SETUP_SCRIPT} could not run: {e}", pytrace=False)
    if proc.returncode != 0 or not _installed():
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        pytest.fail(
            f"BigQuery emulator: {SETUP_SCRIPT} failed (exit {proc.returncode}):\n{out}",
            pytrace=False,
        )


def start(data_dir: Path) -> tuple[subprocess.Popen[bytes], Emulator]:
    """Start the emulator on free ports; waits (bounded) until it answers."""
    port, grpc_port = _free_port(), _free_port()
    log = data_dir / "emulator.log"
    env = dict(os.environ, HOME=str(EMULATOR_DIR / "home"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(_executable()), "serve", "--host", "127.0.0.1", "--port", str(port),
                "--grpc-port", str(grpc_port), "--project", PROJECT,
                "--data-dir", str(data_dir / "data"),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    emulator = Emulator(f"http://127.0.0.1:{port}", PROJECT, f"127.0.0.1:{grpc_port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"BigQuery emulator exited with {proc.returncode} at start:\n{_tail(log)}",
                pytrace=False,
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, emulator
        except OSError:
            time.sleep(0.2)
    stop(proc)
    pytest.fail(
        f"BigQuery emulator did not listen on {port} within {START_TIMEOUT:.0f} s:\n{_tail(log)}",
        pytrace=False,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A running emulator for the whole session: endpoint and project."""
    if not _installed():
        install()
    proc, emulator = start(tmp_path_factory.mktemp("bq_emulator"))
    try:
        yield emulator
    finally:
        stop(proc)


def warehouse(emulator: Emulator, location: str | None = "US"):  # -> BigQueryWarehouse
    """A BigQueryWarehouse on the emulator whose calls fail fast instead of retrying 600 s."""
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from plex_etl.warehouse.bigquery import BigQueryWarehouse, bigquery_client

    client = bigquery_client(emulator.project, location, api_endpoint=emulator.endpoint)
    return BigQueryWarehouse(
        client,
        location,
        retry=DEFAULT_RETRY.with_timeout(API_DEADLINE),
        job_retry=None,
        job_timeout=JOB_TIMEOUT,
    )
