"""A TCP proxy that forwards, then freezes: the network stall of the timeout tests.

Not a test module. `FrozenProxy` runs this file as a child process in its own process group:
one process accepts, and a forked process per connection forwards both ways. A connection's
process stops itself (SIGSTOP) once it has forwarded `freeze_after` bytes from the server: the
client then waits mid-stream on a socket that stays open and silent, exactly what a hung
network path or a frozen middlebox does. New connections are still served (so a second
connection, e.g. the KILL of the stalled query, reaches the server) until `freeze()` stops the
whole proxy: then even connecting hangs (the kernel completes the TCP handshake, nothing answers).
Leaving the `with` block kills the whole process group, frozen or not.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys


class FrozenProxy:
    """`FrozenProxy((host, port), freeze_after=bytes)` in a `with` block; connect to `port`."""

    def __init__(self, target: tuple[str, int], freeze_after: int | None = None) -> None:
        self.target = target
        self.freeze_after = freeze_after
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._events: list[str] = []

    def __enter__(self) -> FrozenProxy:
        self._process = subprocess.Popen(
            [sys.executable, __file__, self.target[0], str(self.target[1]), str(self.freeze_after or 0)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        ready, _, _ = select.select([self._process.stdout], [], [], 10)
        if not ready:
            self.__exit__()
            raise RuntimeError("the frozen proxy did not start within 10 s")
        self.port = int(self._process.stdout.readline())  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process.stdout.close()  # type: ignore[union-attr]

    def freeze(self) -> None:
        """Stop the whole proxy: established connections and new ones hang."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    @property
    def frozen_connections(self) -> int:
        """How many connections have frozen themselves so far (after `freeze_after` bytes)."""
        assert self._process is not None and self._process.stdout is not None
        while select.select([self._process.stdout], [], [], 0)[0]:
            line = self._process.stdout.readline()
            if not line:
                break
            self._events.append(line.strip())
        return self._events.count("frozen")


def _forward(client: socket.socket, target: tuple[str, int], freeze_after: int) -> None:
    upstream = socket.create_connection(target, timeout=10)
    upstream.settimeout(None)
    received = 0
    pairs = {client: upstream, upstream: client}
    while True:
        readable, _, _ = select.select(list(pairs), [], [])
        for source in readable:
            data = source.recv(65536 if not freeze_after or source is client else
                               max(1, min(65536, freeze_after - received)))
            if not data:
                return
            pairs[source].sendall(data)
            if source is upstream:
                received += len(data)
                if freeze_after and received >= freeze_after:
                    print("frozen", flush=True)
                    os.kill(os.getpid(), signal.SIGSTOP)  # both sockets stay open, silent


def _serve(host: str, port: int, freeze_after: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forwarders are reaped by the kernel
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            try:
                _forward(client, (host, port), freeze_after)
            finally:
                os._exit(0)
        client.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
