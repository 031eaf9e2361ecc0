"""Waits on the network that are bounded, logged and interruptible.

A call that may block on a server (a MySQL query or fetch, a BigQuery request or job) runs in
a helper thread while the caller's thread waits for it in slices of WAIT_SLICE seconds: a
signal's exception (KeyboardInterrupt, Dagster's interruption on SIGTERM) is raised in the
caller's thread within a slice, whatever the call is blocked in, and the caller gives up
after its own deadline instead of trusting a driver's socket timeout alone (libmariadb's was
seen not to apply inside a prepared statement's fetch). A long wait logs every `log_every`
seconds what it waits for. A call given up on is abandoned to its own timeouts: the caller
must make sure it ends (kill its query, shut its socket) before touching what it uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WAIT_SLICE = 0.1  # seconds between checks: how soon a signal or a deadline is seen
LOG_EVERY = 10.0  # seconds between "still waiting" log lines


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the caller names what it waited for."""

    def __init__(self, what: str, waited: float) -> None:
        super().__init__(f"{what}: no answer within {waited:.0f} s")
        self.what = what
        self.waited = waited


def wait(
    ready: Callable[[float], bool],
    what: Callable[[], str],
    limit: float | None,
    since: Callable[[], float | None] | None = None,
    log_every: float | None = None,
    report: Callable[[str], None] | None = None,
) -> None:
    """Call `ready(slice)` (which blocks at most `slice` seconds) until it returns True.

    Raises WaitTimeout once `limit` seconds (None: never) have passed since `since()` (the
    last progress; default the start of this wait; None from it: no progress is due, e.g. a
    producer waiting for its consumer). Logs `what()` every `log_every` seconds (default
    LOG_EVERY) of waiting, to `report` when given (e.g. a Dagster run's log), else this
    module's logger."""
    started = time.monotonic()
    every = LOG_EVERY if log_every is None else log_every
    next_log = started + every
    while not ready(WAIT_SLICE):
        now = time.monotonic()
        mark = started if since is None else since()
        if limit is not None and mark is not None and now - mark >= limit:
            raise WaitTimeout(what(), now - mark)
        if now >= next_log:
            (report or log.info)(f"{what()} (waited {now - started:.0f} s)")
            next_log = now + every


def call(
    fn: Callable[..., Any],
    *args: Any,
    what: str | Callable[[], str],
    limit: float | None,
    done: threading.Event | None = None,
    log_every: float | None = None,
    report: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Any:
    """`fn(*args, **kwargs)` in a helper thread, its result or error returned or raised here;
    WaitTimeout after `limit` seconds (the call then runs on, abandoned). `done` (optional)
    is set when the helper thread no longer runs `fn`. (`limit`, not `timeout`: many a client
    call takes a `timeout` of its own, passed on in `kwargs`.)"""
    box: dict[str, Any] = {}
    finished = done or threading.Event()

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name="plex-etl-wait", daemon=True).start()
    describe = what if callable(what) else (lambda: what)  # type: ignore[return-value]
    wait(finished.wait, describe, limit, log_every=log_every, report=report)
    if "error" in box:
        raise box["error"]
    return box.get("value")
