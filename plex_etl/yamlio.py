"""YAML reading with libyaml's C parser when PyYAML was built with it.

The committed catalogs are large (the Plex catalog: ~10k lines); the pure-Python SafeLoader
spent ~1.7 s of a ~5 s Definitions load on it, the C loader a tenth of that
(docs/benchmarks.md). Both build the same Python values from the same text; the pure-Python
loader stays as the fallback where libyaml is missing.
"""

from __future__ import annotations

import gc
from typing import Any

import yaml

try:
    SAFE_LOADER: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # PyYAML without libyaml
    SAFE_LOADER = yaml.SafeLoader


def safe_load(text: str) -> Any:
    """`yaml.safe_load`, with the C loader when available.

    The cyclic garbage collector pauses meanwhile: the loader allocates tens of thousands of
    short-lived nodes (none in cycles), and with Dagster's objects already on the heap the
    collections they trigger took as long as the parse itself (~70 ms of ~150 ms for the Plex
    catalog).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    finally:
        if enabled:
            gc.enable()
