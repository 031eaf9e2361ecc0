"""MySQL sources as configuration: where each source lives and how to authenticate.

A deployment describes its sources in `sources.yaml` inside the config directory
(`PLEX_ETL_CONFIG_DIR`, default: the `config/` folder shipped with the package).
Adding a source is adding an entry there; no code changes.

String values may reference environment variables as `${NAME}` or `${NAME:-default}`.
The password is never written in the file: it comes from an environment variable
(`password: {env: NAME}`) or a Google Secret Manager secret
(`password: {secret: projects/P/secrets/S/versions/latest}`), whose payload is either
the bare password or a JSON object with `password` (and optionally `host`, `port`,
`user`, `database`), the way the old system stored it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plex_etl.yamlio import YamlFileError, load_file

PACKAGE_CONFIG_DIR = Path(__file__).parent / "config"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SourceConfigError(ValueError):
    """The sources file is missing, malformed, or names something that cannot be resolved."""


def config_dir() -> Path:
    """The directory holding sources.yaml and the catalog and plan files."""
    return Path(os.environ.get("PLEX_ETL_CONFIG_DIR") or PACKAGE_CONFIG_DIR)


class Secret(str):
    """A string that never shows itself in repr, str formatting of containers, or logs."""

    def __repr__(self) -> str:
        return "Secret('********')"


@dataclass(frozen=True)
class PasswordRef:
    """Where the password comes from: an environment variable or a Secret Manager secret."""

    env: str | None = None
    secret: str | None = None

    def describe(self) -> str:
        if self.env:
            return f"environment variable {self.env}"
        if self.secret:
            return f"secret {self.secret}"
        return "no password"


@dataclass(frozen=True)
class Tls:
    enabled: bool = False
    ca_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class Source:
    """One MySQL database to replicate. Holds no password: see `resolve_credentials`."""

    name: str
    host: str
    port: int
    database: str
    user: str
    password: PasswordRef = field(default_factory=PasswordRef)
    time_zone: str = "UTC"
    tls: Tls = field(default_factory=Tls)
    pool_limit: int = 2
    lookback_days: int = 3
    connect_timeout: int = 10
    read_timeout: int = 600
    write_timeout: int = 600

    def describe(self) -> str:
        """Human description for messages: never includes the password."""
        return f"source '{self.name}' ({self.user}@{self.host}:{self.port}/{self.database})"


@dataclass(frozen=True)
class Credentials:
    """Resolved connection parameters; `password` is a Secret so it never prints."""

    host: str
    port: int
    database: str
    user: str
    password: Secret

    def __repr__(self) -> str:
        return (
            f"Credentials(host={self.host!r}, port={self.port}, database={self.database!r}, "
            f"user={self.user!r}, password='********')"
        )


def _expand(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None or found == "":
            if default is None:
                raise SourceConfigError(f"{where}: environment variable {name} is not set")
            return default
        return found

    return _ENV_REF.sub(sub, value)


def _parse_source(name: str, raw: dict[str, Any], path: Path) -> Source:
    where = f"{path}: source '{name}'"
    if not isinstance(raw, dict):
        raise SourceConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {
        "host", "port", "database", "user", "password", "time_zone", "tls",
        "pool_limit", "lookback_days", "connect_timeout", "read_timeout", "write_timeout",
    }
    unknown = set(raw) - known
    if unknown:
        raise SourceConfigError(f"{where}: unknown keys {sorted(unknown)}")
    values = {k: _expand(v, f"{where}.{k}") for k, v in raw.items() if k not in ("password", "tls")}
    password = raw.get("password") or {}
    if isinstance(password, str):
        raise SourceConfigError(
            f"{where}.password: write the password in an environment variable or a secret "
            "({env: NAME} or {secret: projects/...}), never in the file"
        )
    if not isinstance(password, dict) or set(password) - {"env", "secret"}:
        raise SourceConfigError(f"{where}.password: use 'env' or 'secret'")
    tls = raw.get("tls") or {}
    if not isinstance(tls, dict):
        raise SourceConfigError(f"{where}.tls: expected a mapping (enabled, ca_file, verify)")
    try:
        return Source(
            name=name,
            host=str(values.get("host", "127.0.0.1")),
            port=int(values.get("port", 3306)),
            database=str(values.get("database", name)),
            user=str(values.get("user", "root")),
            password=PasswordRef(
                env=_expand(password.get("env"), where), secret=_expand(password.get("secret"), where)
            ),
            time_zone=str(values.get("time_zone", "UTC")),
            tls=Tls(
                enabled=bool(tls.get("enabled", bool(tls))),
                ca_file=_expand(tls.get("ca_file"), where),
                verify=bool(tls.get("verify", True)),
            ),
            pool_limit=int(values.get("pool_limit", 2)),
            lookback_days=int(values.get("lookback_days", 3)),
            connect_timeout=_seconds(values, "connect_timeout", 10),
            read_timeout=_seconds(values, "read_timeout", 600),
            write_timeout=_seconds(values, "write_timeout", 600),
        )
    except (TypeError, ValueError) as exc:
        raise SourceConfigError(f"{where}: {exc}") from None


def _seconds(values: dict[str, Any], key: str, default: int) -> int:
    seconds = int(values.get(key, default))
    if seconds <= 0:
        raise ValueError(f"{key} must be a positive number of seconds, not {seconds}")
    return seconds


def load_sources(path: Path | None = None) -> dict[str, Source]:
    """Read every source of the sources file, in file order."""
    path = path or config_dir() / "sources.yaml"
    if not path.exists():
        raise SourceConfigError(f"sources file not found: {path}")
    try:
        raw = load_file(path) or {}
    except YamlFileError as exc:
        raise SourceConfigError(str(exc)) from None
    entries = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise SourceConfigError(f"{path}: expected a 'sources:' mapping with at least one source")
    return {name: _parse_source(name, body, path) for name, body in entries.items()}


def get_source(name: str, path: Path | None = None) -> Source:
    sources = load_sources(path)
    if name not in sources:
        raise SourceConfigError(f"unknown source '{name}'; configured: {', '.join(sources)}")
    return sources[name]


def _read_secret(secret_name: str) -> str:
    # Imported lazily: only deployments that keep passwords in Secret Manager need the client.
    from google.cloud import secretmanager

    client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(request={"name": secret_name})
    return response.payload.data.decode("utf-8")


def resolve_credentials(source: Source) -> Credentials:
    """Host, user and password for a source, reading its environment variable or secret."""
    ref = source.password
    host, port, user, database, password = (
        source.host, source.port, source.user, source.database, "",
    )
    if ref.env:
        password = os.environ.get(ref.env, "")
    elif ref.secret:
        try:
            payload = _read_secret(ref.secret)
        except Exception as exc:  # the client's own message names the secret, not its value
            raise SourceConfigError(
                f"{source.describe()}: cannot read {ref.describe()}: {type(exc).__name__}"
            ) from None
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if isinstance(data, dict):
            password = str(data.get("password", ""))
            host = str(data.get("host", host))
            port = int(data.get("port", port))
            user = str(data.get("user", user))
            database = str(data.get("database", database))
        else:
            password = payload.strip()
    return Credentials(host=host, port=port, database=database, user=user, password=Secret(password))


def with_database(source: Source, database: str) -> Source:
    """The same server and credentials, another database (used by demo builds and tests)."""
    return replace(source, database=database)
