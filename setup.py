"""The C extension of the binary read (plex_etl/extract/_binary.c); everything else is in pyproject.toml.

It compiles against libmariadb's headers (Debian: libmariadb-dev, which mysqlclient needs too;
scripts/ensure-build-deps.sh installs it)."""

import shlex
import subprocess

from setuptools import Extension, setup


def _flags(option: str) -> list[str]:
    for command in (["pkg-config", option, "libmariadb"], ["mariadb_config", option]):
        try:
            return shlex.split(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        except (OSError, subprocess.CalledProcessError):
            continue
    raise RuntimeError("libmariadb headers not found: install libmariadb-dev (scripts/ensure-build-deps.sh)")


setup(
    ext_modules=[
        Extension(
            "plex_etl.extract._binary",
            ["plex_etl/extract/_binary.c"],
            extra_compile_args=[*_flags("--cflags"), "-O2", "-Wall"],
            extra_link_args=_flags("--libs"),
        )
    ]
)
