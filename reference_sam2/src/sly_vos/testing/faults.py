"""A loopback HTTP server that breaks the body of its answers, for the weight-download tests.

``pytest-httpserver`` (werkzeug) covers statuses, headers, redirects and ranges; it always
sends a whole, well-framed body, so the faults below (which need the raw socket) live here.
Any path serves ``server.payload`` (206 for a satisfiable ``Range`` whose ``If-Range``, if
any, matches a validator). Each GET takes the next fault from ``server.faults`` ("ok" once empty):

``ok``     the file
``drop``   announce the full length, send half the body, close the connection
``short``  announce 100 bytes more than the body, send the body, close
``long``   announce 7 bytes less than the body, send the whole body
``drip``   send 16 bytes, then pause ``drip_pause_s`` between 4 slices of the rest

``validators`` replaces the default strong ``ETag`` header (``{}``: none, so clients cannot
use ``If-Range``; ``{"ETag": 'W/"x"', "Last-Modified": ...}``: a weak tag and a date); an
``If-Range`` equal to one of them is honoured. Every request is recorded in ``server.log``
(path, Range, If-Range).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = frozenset({"ok", "drop", "short", "long", "drip"})
_RANGE_RE = re.compile(r"bytes=(\d+)-")


class FaultServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 (free port) with switchable body faults."""

    daemon_threads = True

    def __init__(
        self,
        payload: bytes,
        *,
        validators: dict[str, str] | None = None,
        drip_pause_s: float = 0.5,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.validators = {"ETag": self.etag} if validators is None else validators
        self.drip_pause_s = drip_pause_s
        self.faults: deque[str] = deque()
        self.log: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def etag(self) -> str:
        """Strong ETag of the current payload."""
        return '"' + hashlib.sha256(self.payload).hexdigest()[:16] + '"'

    def url(self, path: str = "/weights.pth") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def add_faults(self, *faults: str) -> None:
        unknown = set(faults) - FAULTS
        if unknown:
            raise ValueError(f"faults: unknown {sorted(unknown)}; known: {sorted(FAULTS)}")
        with self._lock:
            self.faults.extend(faults)

    def next_fault(self) -> str:
        with self._lock:
            return self.faults.popleft() if self.faults else "ok"

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(entry)

    def hits(self, path: str = "/weights.pth") -> list[dict[str, Any]]:
        """Requests received for ``path``, in order."""
        with self._lock:
            return [entry for entry in self.log if entry["path"] == path]

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-body is the point of these tests: stay quiet."""

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def do_GET(self) -> None:
        srv = self.server
        if_range = self.headers.get("If-Range")
        srv.record(
            {
                "path": self.path.split("?", 1)[0],
                "range": self.headers.get("Range"),
                "if_range": if_range,
            }
        )
        fault = srv.next_fault()
        data, start = srv.payload, 0
        wanted = _RANGE_RE.fullmatch(self.headers.get("Range", ""))
        fresh = if_range is None or if_range in srv.validators.values()
        if wanted and fresh and int(wanted[1]) < len(data):  # else the whole file, as RFC 9110
            start = int(wanted[1])
        body = data[start:]
        announced = {"short": len(body) + 100, "long": len(body) - 7}.get(fault, len(body))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(announced))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in srv.validators.items():
            self.send_header(name, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            if fault == "drop":
                self.wfile.write(body[: len(body) // 2])
            elif fault == "drip":
                self._drip(body)
            else:
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (read timeout): expected here
        self.close_connection = True

    def _drip(self, body: bytes) -> None:
        self.wfile.write(body[:16])
        self.wfile.flush()
        step = max(1, -(-(len(body) - 16) // 4))
        for index in range(16, len(body), step):
            if self.server.stopping.wait(self.server.drip_pause_s):
                return
            self.wfile.write(body[index : index + step])
            self.wfile.flush()
