"""YAML reading: libyaml's C parser when PyYAML was built with it, and a parsed-value cache.

The committed catalogs are large (the Plex catalog: ~10k lines, 240 kB). The pure-Python
SafeLoader spent ~1.7 s of a ~5 s Definitions load on it, the C loader ~0.15 s, still the
largest single cost of loading the code location; every Dagster process (webserver, daemon,
each run's step process) pays it. `load_file` keeps the parsed value of each text it parsed in
a cache directory, keyed by a hash of the text (as Python keeps bytecode): reading it back with
`marshal` takes ~1 ms, and a changed file has a new hash, so a stale value is never read
(docs/benchmarks.md, *Loading the code location*).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import marshal
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

try:
    SAFE_LOADER: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # PyYAML without libyaml
    SAFE_LOADER = yaml.SafeLoader

CACHE_ENTRIES = 64  # parsed files kept: a catalog, a plan and sources per source, with room for edits


class YamlFileError(ValueError):
    """A file that is not valid YAML; the message names the file, line and column."""


def yaml_error_message(path: Path | str, exc: yaml.YAMLError) -> str:
    """'<path>, line L, column C: not valid YAML: <problem>': where a YAML error is, in the file's
    own lines (and where the construct it breaks started, when that is another line)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    start = getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        context += f" started at line {start.line + 1}"
    problem = ": ".join(p for p in (context, getattr(exc, "problem", None)) if p)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    return f"{where}: not valid YAML: {problem or exc}"


@contextlib.contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many long-lived objects.

    Parsing a catalog or building Definitions allocates tens of thousands of objects that are
    not garbage; with Dagster's objects already on the heap, the collections they trigger
    took as long as the parse itself (~70 ms of ~150 ms for the Plex catalog) and ~10% of
    building the Definitions. Collection resumes (and catches up) on exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def safe_load(text: str) -> Any:
    """`yaml.safe_load`, with the C loader when available."""
    with garbage_collection_paused():
        return yaml.load(text, Loader=SAFE_LOADER)


def load_file(path: Path) -> Any:
    """`safe_load` of a file's text, read from the parsed-value cache when that text was seen before.

    The cache is best effort: a cache that cannot be read or written (no writable home, a
    value `marshal` cannot hold such as a YAML timestamp) is skipped and the text is parsed.
    A text that is not valid YAML raises YamlFileError naming the file, line and column.
    """
    text = path.read_text()
    cached = _cache_dir() / f"{path.name}.{_cache_key(text)}.marshal"
    with contextlib.suppress(OSError, EOFError, ValueError, TypeError), garbage_collection_paused():
        return marshal.loads(cached.read_bytes())
    try:
        value = safe_load(text)
    except yaml.YAMLError as exc:
        raise YamlFileError(yaml_error_message(path, exc)) from None
    _write_cache(cached, value)
    return value


def _cache_dir() -> Path:
    """PLEX_ETL_CACHE_DIR, else the user's cache directory: never next to the file, which in
    production is a read-only ConfigMap."""
    explicit = os.environ.get("PLEX_ETL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plex-etl"


def _cache_key(text: str) -> str:
    """The text, the parser and the Python version (marshal's format) decide the value."""
    identity = f"{yaml.__version__}|{SAFE_LOADER.__name__}|{sys.version_info[:2]}|{marshal.version}|"
    return hashlib.sha256((identity + text).encode()).hexdigest()[:32]


def _write_cache(cached: Path, value: Any) -> None:
    try:
        data = marshal.dumps(value)
    except ValueError:
        return
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, cached)  # atomic: a concurrent reader sees the whole value or none
        entries = sorted(cached.parent.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[CACHE_ENTRIES:]:  # the values of texts not seen for longest
            old.unlink(missing_ok=True)
