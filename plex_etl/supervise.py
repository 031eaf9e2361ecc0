"""A child process that stops when plex-etl is asked to stop (`plex-etl dev` runs `dagster dev`
through it, `plex-etl replicate` and `reconcile --repair` each `dagster asset materialize`).

A stop must reach the child, in the order Dagster expects, whatever plex-etl inherited:

- A shell starts background commands with SIGINT ignored, and an ignored signal stays ignored
  across `exec`: Python then installs no KeyboardInterrupt handler, and `dagster dev`, which maps
  SIGTERM onto SIGINT's handler, ignores SIGTERM too (only SIGKILL stopped it). The child starts
  with the default handlers instead.
- The child runs in its own process group, and only the child gets the stop signal: `dagster dev`
  then stops its webserver, daemon and code servers itself, in order. A terminal's Ctrl-C sent to
  all of them at once made `dagster dev` restart the code server it was stopping (~20 s).
- Whatever is left of the child's process group when the child has exited (a run worker of a
  stopped `dagster dev`) is stopped too, SIGTERM then SIGKILL: nothing outlives plex-etl.
- A child that has nothing in flight when asked to stop (`idle`: a Dagster run waiting for a pool
  slot, which Dagster's in-process executor keeps waiting through SIGTERM) is stopped at once
  instead of after the grace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LEFTOVER_GRACE_SECONDS = 5.0  # what outlived the child gets this long after SIGTERM, then SIGKILL


@dataclass(frozen=True)
class Finished:
    returncode: int
    stopped_by: int | None  # the signal plex-etl received, if any
    output: str = ""  # stdout then stderr, when captured


def _default_signal_handlers() -> None:
    """In the child, before exec: every stop signal back to its default disposition (an ignored
    SIGINT would stay ignored in the new program)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_group(pgid: int, grace_seconds: float = LEFTOVER_GRACE_SECONDS) -> None:
    """Stops what is left in a process group: SIGTERM, then SIGKILL after `grace_seconds`."""
    for signum, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            return
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)


def run_stoppable(
    argv: Sequence[str],
    *,
    grace_seconds: float = 30.0,
    name: str = "child",
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    idle: Callable[[int], bool] | None = None,
) -> Finished:
    """Runs `argv` until it exits. SIGTERM, SIGINT or SIGHUP to this process is passed on to the
    child as SIGTERM; a child still running `grace_seconds` later, or at once when `idle(pid)`
    says it has nothing in flight, is killed with its process group. Its output goes where this
    process's goes, or, with `capture`, into `Finished.output`."""
    import contextlib
    import tempfile

    # A file, not a pipe: a pipe nobody reads while waiting could fill and block the child.
    with tempfile.TemporaryFile("w+") if capture else contextlib.nullcontext() as output:
        returncode, stopped_by = _supervise(argv, grace_seconds, name, env, output, idle)
        text = ""
        if output is not None:
            output.seek(0)
            text = output.read()
    return Finished(returncode, stopped_by, text)


def _supervise(argv: Sequence[str], grace_seconds: float, name: str, env: Mapping[str, str] | None,
               output: object, idle: Callable[[int], bool] | None) -> tuple[int, int | None]:
    child = subprocess.Popen(list(argv), start_new_session=True, preexec_fn=_default_signal_handlers,
                             env=dict(env) if env is not None else None, stdout=output,
                             stderr=subprocess.STDOUT if output else None, text=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not received:
            print(f"plex-etl: signal {signum}: stopping {name} (pid {child.pid})", file=sys.stderr, flush=True)
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        deadline = None
        while True:
            try:
                child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + grace_seconds
                if deadline is None:
                    continue
                if time.monotonic() > deadline:
                    print(f"plex-etl: {name} did not stop within {grace_seconds:.0f} s: killed", file=sys.stderr,
                          flush=True)
                    end_group(child.pid, grace_seconds=0)
                elif idle is not None and idle(child.pid):
                    end_group(child.pid, grace_seconds=0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:  # an exception in this process: the child must not outlive it
            child.kill()
            child.wait()
        end_group(child.pid)
    return child.returncode, (received[0] if received else None)
