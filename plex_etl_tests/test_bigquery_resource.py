"""The BigQuery warehouse gets its client from dagster-gcp's `BigQueryResource`, configured as in
any Dagster project (project, location, a base64 service-account key), and the key stays out of
what Dagster shows."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import dagster as dg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plex_etl.defs.resources import GCP_CREDENTIALS_ENV, warehouse_from_environment
from plex_etl_tests.bq_emulator import Emulator, bigquery_emulator  # noqa: F401

ACCOUNT = "loader@test-project.iam.gserviceaccount.com"


@pytest.fixture
def token_server() -> Iterator[tuple[str, list[dict]]]:
    """Google's token endpoint as a service-account key names it (`token_uri`): records the
    claims of each signed assertion and hands out a token."""
    claims: list[dict] = []

    class Token(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            payload = form["assertion"][0].split(".")[1]
            claims.append(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
            body = json.dumps({"access_token": "token-1", "expires_in": 3600, "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/token", claims
    server.shutdown()


def service_account_key(token_uri: str) -> str:
    """A service-account key file's JSON, base64-encoded as dagster-gcp takes it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "test-project", "private_key_id": "key-1",
            "private_key": pem, "client_email": ACCOUNT, "client_id": "1", "token_uri": token_uri}
    return base64.b64encode(json.dumps(info).encode()).decode()


def test_the_warehouse_client_is_dagster_gcps_signed_in_with_the_key(
    bigquery_emulator: Emulator, token_server, monkeypatch  # noqa: F811
) -> None:
    """No endpoint setting: dagster-gcp's BigQueryResource builds the client (Google's own
    BIGQUERY_EMULATOR_HOST points any such client at the emulator). It signs in as the key's
    account, works (a load and a read), and leaves no key file or variable behind."""
    token_uri, claims = token_server
    key = service_account_key(token_uri)
    for name in ("PLEX_ETL_BIGQUERY_ENDPOINT", "PLEX_ETL_LOCAL_WAREHOUSE", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "bigquery")
    monkeypatch.setenv("PLEX_ETL_GCP_PROJECT", bigquery_emulator.project)
    monkeypatch.setenv("PLEX_ETL_BIGQUERY_LOCATION", "US")
    monkeypatch.setenv(GCP_CREDENTIALS_ENV, key)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)

    resource = warehouse_from_environment()
    assert resource.gcp_credentials == dg.EnvVar(GCP_CREDENTIALS_ENV)  # Dagster shows the name only
    assert key not in json.dumps(resource.model_dump(), default=str)

    warehouse = resource.get()
    assert warehouse.query("SELECT 41 + 1 AS answer").to_pylist() == [{"answer": 42}]
    assert [c["iss"] for c in claims] == [ACCOUNT]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ


def test_a_key_that_is_not_one_is_refused_without_quoting_it(monkeypatch) -> None:
    monkeypatch.setenv("PLEX_ETL_WAREHOUSE", "bigquery")
    monkeypatch.setenv("PLEX_ETL_GCP_PROJECT", "p")
    monkeypatch.setenv("PLEX_ETL_BIGQUERY_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv(GCP_CREDENTIALS_ENV, "not-a-key-s3cret")
    with pytest.raises(ValueError, match="not a base64-encoded service-account key") as error:
        warehouse_from_environment().get()
    assert "s3cret" not in str(error.value)
