"""The binary read's use of mysqlclient's private API, and the check that makes it safe.

Why a private API: the binary read (the C extension `extract/_binary.c`) runs its prepared
statement on the extraction connection itself, so that it is inside the read's consistent
snapshot, FOUND_ROWS() counts its rows and the session's timeouts and KILL apply to it
(extract/stream.py). The only way to a mysqlclient connection's `MYSQL*` is the connection's
`_get_native_connection()`, which mysqlclient documents as private ("introduced ONLY for XTA
integration"): it may change or go in any release. This module is its only user
(plex_etl_tests/test_native.py pins what it relies on: the method, its capsule's name, its
refusal on a closed connection, and the `open` member the C module checks before each fetch).

Why the check: a `MYSQL*` is a struct of the client library that made it, and only that
library's functions may touch it. The extension is compiled against some libmariadb or
libmysqlclient (setup.py), mysqlclient against possibly another one, or another version.
When the extension is loaded it must therefore link the very library file, of the very
version, that mysqlclient links; otherwise it is refused (`BinaryReadUnavailable`, which
names both) and the reader falls back to the text protocol (extract/text.py).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# What the C module checks on the capsule (PyCapsule_GetPointer in _binary.c).
CAPSULE_NAME = "_mysql.connection.native_connection"


class BinaryReadUnavailable(RuntimeError):
    """The binary read's extension is not built, does not load, or links another client library."""


@dataclass(frozen=True)
class ClientLibrary:
    """The MySQL client library a C module calls: its file and its mysql_get_client_info()."""

    path: str
    version: str

    def __str__(self) -> str:
        return f"{self.path} {self.version}"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def linked_library(module_file: str) -> str:
    """The file that defines mysql_get_client_info for the C module `module_file` (as its loader
    resolves it: the module itself when the library is linked in statically)."""
    function = ctypes.CDLL(module_file).mysql_get_client_info  # the module's own lookup
    info = _DlInfo()
    if not ctypes.CDLL(None).dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)):
        raise OSError(f"dladdr found no library for mysql_get_client_info of {module_file}")
    return os.path.realpath(info.dli_fname.decode())


def client_libraries(binary: ModuleType) -> tuple[ClientLibrary, ClientLibrary]:
    """The client library of the extension `binary`, and mysqlclient's."""
    from MySQLdb import _mysql

    return (ClientLibrary(linked_library(binary.__file__), binary.client_info()),
            ClientLibrary(linked_library(_mysql.__file__), _mysql.get_client_info()))


def library_mismatch(ours: ClientLibrary, theirs: ClientLibrary) -> str | None:
    """Why the extension must not touch mysqlclient's MYSQL*, or None when they share the library."""
    if ours == theirs:
        return None
    return (f"the binary read's extension links {ours} but mysqlclient links {theirs}: a MYSQL* "
            "is only valid in the client library that made it")


@functools.cache
def _load() -> ModuleType | str:
    try:
        from plex_etl.extract import _binary
    except ImportError as exc:
        return f"the binary read's extension plex_etl/extract/_binary.c is not built or does not load: {exc}"
    try:
        mismatch = library_mismatch(*client_libraries(_binary))
    except (OSError, AttributeError) as exc:
        mismatch = f"cannot tell which client library the binary read's extension and mysqlclient link: {exc}"
    return mismatch or _binary


def binary_module() -> ModuleType:
    """The extension, loaded and checked once per process (BinaryReadUnavailable says why not)."""
    loaded = _load()
    if isinstance(loaded, str):
        raise BinaryReadUnavailable(loaded)
    return loaded


def native_connection(connection: Any) -> Any:
    """The connection's MYSQL* in mysqlclient's capsule (raises once the connection is closed)."""
    return connection._get_native_connection()


def binary_statement(connection: Any, sql: str, kinds: list[tuple[str, int, int]]) -> Any:
    """The extension's Statement for `sql` (executed) on the mysqlclient `connection`."""
    return binary_module().Statement(connection, native_connection(connection), sql, kinds)
