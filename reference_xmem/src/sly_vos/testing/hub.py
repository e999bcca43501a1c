"""A Hugging Face Hub stand-in on loopback: what ``hf_hub_download`` asks for, nothing more.

Point ``HF_ENDPOINT`` (or a Docker build's ``HF_ENDPOINT`` argument) at ``HubStandIn.url``.
It answers ``HEAD``/``GET /<owner>/<repo>/resolve/<revision>/<file>`` for any repository
(any other path: 404)
with the files it was given, the headers the client reads (``X-Repo-Commit``, a sha256
``ETag``, ``Content-Length``) and ``Range`` requests, and records every request. Faults for
tests: ``fail`` (statuses answered first, one per request) and ``truncate`` (that many bodies
cut in half).
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_COMMIT = "c0ffee" + "0" * 34


class HubStandIn:
    """Serves ``files`` (name -> bytes or a path) for every repository and revision."""

    def __init__(self, files: dict[str, bytes | Path], commit: str = DEFAULT_COMMIT) -> None:
        self.files = {
            name: data if isinstance(data, bytes) else Path(data) for name, data in files.items()
        }
        self.commit = commit
        self.log: list[tuple[str, str, str | None]] = []
        self.fail: list[int] = []
        self.truncate = 0
        self._digests: dict[str, str] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> HubStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def gets(self, name: str) -> int:
        """How many GETs asked for the file ``name``."""
        return sum(1 for cmd, path, _ in self.log if cmd == "GET" and path.endswith("/" + name))

    def file_gets(self) -> int:
        """How many GETs asked for any file (``/resolve/`` paths)."""
        return sum(1 for cmd, path, _ in self.log if cmd == "GET" and "/resolve/" in path)

    def data(self, name: str) -> bytes | None:
        found = self.files.get(name)
        return found.read_bytes() if isinstance(found, Path) else found

    def digest(self, name: str, data: bytes) -> str:
        if name not in self._digests:
            self._digests[name] = hashlib.sha256(data).hexdigest()
        return self._digests[name]


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self, body: bool) -> None:
            hub.log.append((self.command, self.path, self.headers.get("Authorization")))
            path = self.path.split("?")[0]
            name = path.rstrip("/").rsplit("/", 1)[-1]
            data = hub.data(name) if "/resolve/" in path else None  # other API calls: 404
            if data is None or hub.fail:
                self.send_response(hub.fail.pop(0) if data is not None else 404)
                if data is None:
                    self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            asked = self.headers.get("Range", "")
            if asked.startswith("bytes=") and asked.endswith("-"):
                start = int(asked[6:-1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", hub.commit)
            self.send_header("ETag", f'"{hub.digest(name, data)}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            end = None
            if hub.truncate and len(data) > 1:
                hub.truncate -= 1
                end = start + (len(data) - start) // 2
            self.wfile.write(data[start:end])

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self.answer(False)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.answer(True)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler
