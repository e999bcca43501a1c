"""Run the app as a real uvicorn server on loopback and talk to it over real HTTP.

Used by the suites and by scripts: start/stop the server in a subprocess on a free port,
wait for ``/is_ready`` with a deadline, keep its log, and encode / decode
``/track-api-files`` requests the way a Supervisely client does. No Supervisely instance is
contacted (the caller passes an environment with placeholder credentials or a stand-in's).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from PIL import Image

from ..dev.client import (  # noqa: F401 - re-exported for the suites
    REQUEST_TIMEOUT_S,
    answer_to_label_masks,
    bitmap_geometry,
    clip_request,
    encode_frame,
    geometry_mask,
    polygon_geometries,
    post_track,
    track_settings,
)

START_DEADLINE_S = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m uvicorn main:model.app`` in a subprocess, its output in ``log_path``."""

    def __init__(self, app_root: Path, env: dict[str, str], log_path: Path) -> None:
        self.app_root = Path(app_root)
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self, deadline_s: float = START_DEADLINE_S) -> Server:
        """Start the server and wait until ``/is_ready`` answers 200 (or fail with the log)."""
        command = [
            sys.executable, "-m", "uvicorn", "main:model.app",
            "--app-dir", "src", "--host", "127.0.0.1", "--port", str(self.port),
            "--ws", "websockets", "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        began = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.app_root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        while time.monotonic() - began < deadline_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                if requests.post(f"{self.base_url}/is_ready", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - began
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {deadline_s:.0f} s:\n" + self.log_tail())

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        """Resident memory of the server process in bytes."""
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_text().splitlines()[-lines:])

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return requests.post(f"{self.base_url}{path}", **kwargs)


class RssSampler:
    """Samples a process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RssSampler:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def settle_rss(server: Server, target: int | None = None, wait_s: float = 6.0) -> int:
    """RSS after giving the allocator time to return memory; stops early once <= target."""
    deadline = time.monotonic() + wait_s
    value = server.rss()
    while time.monotonic() < deadline:
        if target is not None and value <= target:
            break
        time.sleep(0.5)
        value = min(value, server.rss())
    return value


# ---------------------------------------------------------------- requests


def raw_bitmap_geometry(
    mask: np.ndarray, origin: tuple[int, int] = (0, 0), compress: bool = True
) -> dict[str, Any]:
    """A bitmap geometry encoded by hand like the SDK (PNG, zlib, base64) but without its
    checks, so empty, multi-channel or misplaced masks can be sent."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask)).save(buffer, format="PNG")
    data = zlib.compress(buffer.getvalue()) if compress else buffer.getvalue()
    body = {"origin": list(origin), "data": base64.b64encode(data).decode("ascii")}
    return {"type": "bitmap", "data": {"bitmap": body}}


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header claims ``width x height``."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 4096, 9)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def error_of(response: requests.Response) -> dict[str, Any]:
    """The ``detail`` object of a JSON error answer (fails when the body is not that)."""
    body = response.json()
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, dict) or "error" not in detail or "field" not in detail:
        raise AssertionError(f"not a JSON error answer: {response.status_code} {body!r:.300}")
    return detail


def serving_env(
    settings: Any,
    workdir: Path,
    *,
    server_address: str,
    api_token: str,
    weights: Path | None = None,
    device: str = "cpu",
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of ``uvicorn main:model.app`` outside a Supervisely session, the one
    builder of it (the ``server_env`` fixture and the template repository's tools use it).

    Development mode with ``server_address`` / ``api_token`` as the platform, ``workdir``'s
    ``app_data`` and ``model_dir`` folders, the model on ``device``, the allocator setting of
    the image; ``weights`` for the app's ``<PREFIX>_WEIGHTS``; the app's default checkpoint
    (``<PREFIX>_CHECKPOINT`` unset). ``settings`` is the app's ``AppSettings``; ``base``
    (default: this process's environment) is copied, ``extra`` added last."""
    app_data, model_dir = Path(workdir) / "app_data", Path(workdir) / "model_dir"
    app_data.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if base is None else base)
    env.update(
        SLY_APP_DATA_DIR=str(app_data),
        SERVER_ADDRESS=server_address,
        API_TOKEN=api_token,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        MALLOC_ARENA_MAX="2",  # as in the image (docker/Dockerfile)
        SUPERVISELY_SKIP_HTTPS_USER_HELPER_CHECK="1",
    )
    env[settings.model_dir_env] = str(model_dir)
    env[settings.device_env] = device
    env.pop(settings.checkpoint_env, None)  # the declared default, if any
    if weights is not None:
        env[settings.weights_env] = str(weights)
    env.update(extra)
    return env


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
