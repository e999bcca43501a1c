"""A loopback HTTP server that misbehaves on request, for the weight-download tests.

Any path ending in ``.pth`` serves ``server.payload``; paths in ``server.redirects`` answer 302.
Each GET of the file takes the next fault from ``server.faults`` ("ok" once it is empty):

``ok``        the file (206 for a satisfiable ``Range`` when ``ranges`` is on)
``drop``      announce the full length, send half the body, close the connection
``short``     announce 100 bytes more than the body, send the body, close
``long``      announce 7 bytes less than the body, send the whole body
``drip``      send 16 bytes, then pause ``drip_pause_s`` between 4 slices of the rest
``bad-range`` answer 206 with a ``Content-Range`` that starts at 0, whatever was asked
``500``, ``429``, ``404``   that status with an empty body (429 carries ``Retry-After: 0``)

``slow_s`` spreads every normal body over about that many seconds. ``etag=False`` sends no
validator, so clients cannot use ``If-Range``. Every request is recorded in ``server.log``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = frozenset({"ok", "drop", "short", "long", "drip", "bad-range", "500", "429", "404"})
_RANGE_RE = re.compile(r"bytes=(\d+)-")


class FaultServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 (free port) with switchable faults."""

    daemon_threads = True

    def __init__(
        self,
        payload: bytes,
        *,
        ranges: bool = True,
        etag: bool = True,
        drip_pause_s: float = 0.5,
        slow_s: float = 0.0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.ranges = ranges
        self.send_etag = etag
        self.drip_pause_s = drip_pause_s
        self.slow_s = slow_s
        self.faults: deque[str] = deque()
        self.redirects: dict[str, str] = {}
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
        path = self.path.split("?", 1)[0]
        srv.record(
            {
                "path": path,
                "range": self.headers.get("Range"),
                "if_range": self.headers.get("If-Range"),
            }
        )
        if path in srv.redirects:
            self._empty(302, {"Location": srv.redirects[path]})
            return
        if not path.endswith(".pth"):
            self._empty(404)
            return
        fault = srv.next_fault()
        if fault in ("500", "429", "404"):
            self._empty(int(fault), {"Retry-After": "0"} if fault == "429" else {})
            return
        self._send_file(fault)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, fault: str) -> None:
        srv = self.server
        data = srv.payload
        status, start = 200, 0
        wanted = _RANGE_RE.fullmatch(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        fresh = if_range is None or (srv.send_etag and if_range == srv.etag)
        if fault == "bad-range":
            status = 206
        elif wanted and srv.ranges and fresh:
            start = int(wanted[1])
            if start >= len(data):
                self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        body = data[start:]
        announced = {"short": len(body) + 100, "long": len(body) - 7}.get(fault, len(body))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced))
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if srv.send_etag:
            self.send_header("ETag", srv.etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        try:
            if fault == "drop":
                self.wfile.write(body[: len(body) // 2])
            elif fault == "drip":
                self._drip(body)
            elif srv.slow_s > 0:
                self._slices(body, 10, srv.slow_s / 10)
            else:
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, refused redirect): expected here
        self.close_connection = True

    def _drip(self, body: bytes) -> None:
        self.wfile.write(body[:16])
        self.wfile.flush()
        self._slices(body[16:], 4, self.server.drip_pause_s)

    def _slices(self, body: bytes, count: int, pause_s: float) -> None:
        step = max(1, -(-len(body) // count))
        for index in range(0, len(body), step):
            if self.server.stopping.wait(pause_s):
                return
            self.wfile.write(body[index : index + step])
            self.wfile.flush()
