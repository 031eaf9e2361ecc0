"""A local HTTP proxy in front of a BigQuery emulator that makes every job take a while.

The emulator finishes a job before answering its insert; real BigQuery takes seconds per job
(queueing, slot allocation, commit). The proxy (127.0.0.1 only) forwards every request and:
- counts the jobs inserted, by kind (`load`, `query`; a job id counts once);
- reports an inserted job as RUNNING in the insert's answer while it is younger than `delay`
  seconds, and holds a `GET .../jobs/{id}` or `GET .../queries/{id}` until `delay` seconds after
  the job's insert: a client waiting for a job waits `delay` seconds, whatever the job;
- rewrites resumable-upload session URLs so that uploads also go through it.

    proxy = LatencyProxy("http://127.0.0.1:9050", delay=3.0)
    endpoint = proxy.start()   # http://127.0.0.1:<port>: give it to bigquery_client(...)
    ...; proxy.counts          # {"load": 1, "query": 2}
    proxy.stop()
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_INSERT = re.compile(r"^(/upload)?/bigquery/v2/projects/[^/]+/jobs(\?|$)")
_WAIT = re.compile(r"^/bigquery/v2/projects/[^/]+/(jobs|queries)/([^/?]+)")
_JOB_ID = re.compile(rb'"jobId"\s*:\s*"([^"]+)"')
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                "proxy-authorization", "proxy-authenticate", "host", "accept-encoding", "content-length"}


class LatencyProxy:
    """Forwards to `upstream` (http://host:port); see the module docstring."""

    def __init__(self, upstream: str, delay: float = 3.0, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_netloc = parts.netloc
        self.delay = delay
        self.port = port
        self.counts: dict[str, int] = {"load": 0, "query": 0}
        self.inserted: dict[str, float] = {}  # job id -> monotonic time of its insert
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    # ------------------------------------------------------------------ bookkeeping
    def record_insert(self, body: bytes) -> str | None:
        head = body[:65536]
        found = _JOB_ID.search(head)
        if not found:
            return None
        job_id = found.group(1).decode()
        kind = "load" if re.search(rb'"load"\s*:', head) else "query" if re.search(rb'"query"\s*:', head) else "other"
        with self.lock:
            if job_id not in self.inserted:
                self.inserted[job_id] = time.monotonic()
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return job_id

    def ready_at(self, job_id: str) -> float | None:
        with self.lock:
            t = self.inserted.get(job_id)
        return None if t is None else t + self.delay


class _Handler(BaseHTTPRequestHandler):
    owner: LatencyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _forward(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        job_id: str | None = None
        if self.command == "POST" and _INSERT.match(path):
            job_id = proxy.record_insert(body)
        elif self.command in ("PUT", "POST") and "upload_id=" in path:
            # Later chunks of a resumable upload: the job is the one of its session.
            job_id = _SESSIONS.get(path.split("upload_id=")[1].split("&")[0])
        elif self.command == "GET" and (wait := _WAIT.match(path)):
            job_id = wait.group(2)
            ready = proxy.ready_at(job_id)
            if ready is not None and ready > time.monotonic():
                time.sleep(ready - time.monotonic())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Host"] = proxy.upstream_netloc
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=3600)
        try:
            conn.request(self.command, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
        finally:
            conn.close()
        location = dict((k.lower(), v) for k, v in out_headers).get("location")
        if location and "upload_id=" in location and job_id:
            _SESSIONS[location.split("upload_id=")[1].split("&")[0]] = job_id
        out_headers = [
            (k, v.replace(proxy.upstream_netloc, f"127.0.0.1:{self.server.server_address[1]}"))
            if k.lower() == "location" else (k, v)
            for k, v in out_headers
        ]
        if job_id and data[:1] == b"{":
            data = _still_running(data, proxy.ready_at(job_id))
        self.send_response(response.status, response.reason)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


_SESSIONS: dict[str, str] = {}  # resumable upload id -> job id


def _still_running(data: bytes, ready: float | None) -> bytes:
    """A job resource answered before its time reads as RUNNING (the client then polls)."""
    if ready is None or ready <= time.monotonic():
        return data
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(status, dict) or status.get("state") != "DONE" or status.get("errorResult"):
        return data
    status["state"] = "RUNNING"
    return json.dumps(doc).encode()
