"""The C extension of the binary read (plex_etl/extract/_binary.c); everything else is in pyproject.toml.

It takes mysqlclient's MYSQL*, so it must compile against the client library mysqlclient
links (plex_etl/extract/native.py refuses it otherwise): the flags are found the way
mysqlclient's own build finds them, in its order (MYSQLCLIENT_CFLAGS/MYSQLCLIENT_LDFLAGS, then
pkg-config `mysqlclient` (Oracle's libmysqlclient, preferred when both are installed), then
MariaDB's packages), then `mysql_config` and `mariadb_config`. Debian: libmariadb-dev, which
mysqlclient needs too (scripts/ensure-build-deps.sh installs it).

The extension is optional: without client headers or a compiler the package still installs
and the reader uses the text protocol (plex_etl/extract/text.py, with a warning).
"""

import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup

PKG_CONFIG_NAMES = ("mysqlclient", "mariadb", "libmariadb", "perconaserverclient")  # mysqlclient's order
CONFIG_SCRIPTS = ("mysql_config", "mariadb_config")


def _run(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def client_flags() -> tuple[list[str], list[str]] | None:
    """(compile flags, link flags) of the MySQL client library, or None when none is found."""
    cflags, ldflags = os.environ.get("MYSQLCLIENT_CFLAGS"), os.environ.get("MYSQLCLIENT_LDFLAGS")
    if cflags and ldflags:
        return shlex.split(cflags), shlex.split(ldflags)
    for name in PKG_CONFIG_NAMES:
        if _run(["pkg-config", "--exists", name]) is not None:
            found = _run(["pkg-config", "--cflags", name]), _run(["pkg-config", "--libs", name])
            if None not in found:
                return shlex.split(cflags or found[0]), shlex.split(ldflags or found[1])
    for script in CONFIG_SCRIPTS:
        found = _run([script, "--cflags"]), _run([script, "--libs"])
        if None not in found:
            return shlex.split(cflags or found[0]), shlex.split(ldflags or found[1])
    return None


flags = client_flags()
if flags is None:
    print("plex-etl: no MySQL client headers found (pkg-config mysqlclient/mariadb, mysql_config, mariadb_config): "
          "the binary read is not built, the reader will use the slower text protocol. "
          "Install libmariadb-dev (scripts/ensure-build-deps.sh) and reinstall for the binary read.", file=sys.stderr)

setup(
    ext_modules=[
        Extension(
            "plex_etl.extract._binary",
            ["plex_etl/extract/_binary.c"],
            extra_compile_args=[*flags[0], "-O2", "-Wall"],
            extra_link_args=flags[1],
            optional=True,  # a failed build leaves the text read (plex_etl/extract/text.py), not a failed install
        )
    ] if flags else []
)
