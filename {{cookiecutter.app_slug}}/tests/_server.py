"""Run the app as a real uvicorn server on loopback and talk to it over real HTTP.

Used by ``test_server.py`` and ``test_reliability.py``: start/stop the server in a
subprocess on a free port, wait for ``/is_ready`` with a deadline, keep its log, and encode /
decode ``/track-api-files`` requests the way a Supervisely client does. No Supervisely
instance is contacted (the caller passes an environment with placeholder credentials).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from PIL import Image
from supervisely.annotation.label import Label
from supervisely.annotation.obj_class import ObjClass
from supervisely.geometry.bitmap import Bitmap
from supervisely.geometry.helpers import deserialize_geometry
from supervisely.geometry.polygon import Polygon

START_DEADLINE_S = 180.0
REQUEST_TIMEOUT_S = 120.0


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


def encode_frame(frame: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an image array (HxWx3 RGB, HxW gray, HxWx4 RGBA) as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt.upper() == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bitmap_geometry(mask: np.ndarray) -> dict[str, Any]:
    """A frame-sized boolean mask as the ``{"type", "data"}`` input geometry of the API."""
    return {"type": "bitmap", "data": Bitmap(np.asarray(mask, dtype=bool)).to_json()}


def polygon_geometries(mask: np.ndarray) -> list[dict[str, Any]]:
    """A mask as polygon input geometries (one per connected part)."""
    label = Label(Bitmap(np.asarray(mask, dtype=bool)), ObjClass("bitmap", Bitmap))
    return [
        {"type": "polygon", "data": lab.geometry.to_json()}
        for lab in label.convert(ObjClass("polygon", Polygon))
    ]


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


def track_settings(num_files: int, geometries: list[dict[str, Any]], **extra: Any) -> dict:
    """The ``settings`` form field for ``num_files`` frames (the first one annotated)."""
    return {"frame_index": 0, "frames": num_files - 1, "input_geometries": geometries, **extra}


def post_track(
    base_url: str,
    files: Sequence[bytes],
    settings: dict[str, Any] | str,
    *,
    session: requests.Session | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
    content_type: str = "image/png",
) -> requests.Response:
    """POST ``/track-api-files``: ``files`` parts in order, ``settings`` as a JSON form field
    (a ``str`` is sent as is, to test malformed JSON)."""
    parts = [
        ("files", (f"frame_{index:05d}", data, content_type)) for index, data in enumerate(files)
    ]
    form = {"settings": settings if isinstance(settings, str) else json.dumps(settings)}
    sender = session if session is not None else requests
    return sender.post(f"{base_url}/track-api-files", files=parts, data=form, timeout=timeout)


def clip_request(
    frames: Sequence[np.ndarray], first_mask: np.ndarray, ids: Sequence[int], fmt: str = "PNG"
) -> tuple[list[bytes], dict[str, Any]]:
    """Encoded frames and settings tracking each of ``ids`` (one bitmap per object)."""
    files = [encode_frame(frame, fmt) for frame in frames]
    geometries = [bitmap_geometry(first_mask == obj_id) for obj_id in ids]
    return files, track_settings(len(files), geometries)


# ---------------------------------------------------------------- answers


def geometry_mask(item: dict[str, Any], height: int, width: int) -> np.ndarray:
    """One answered ``{"type", "data"}`` geometry drawn as an HxW boolean mask."""
    geometry = deserialize_geometry(item["type"], item["data"])
    canvas = np.zeros((height, width), dtype=np.uint8)
    geometry.draw(bitmap=canvas, color=1)
    return canvas.astype(bool)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def answer_to_label_masks(
    answer: list[list[dict[str, Any]]],
    first_mask: np.ndarray,
    ids: Sequence[int],
) -> list[np.ndarray]:
    """Turn an answer for one-bitmap-per-object input back into label masks (frame 0 = input).

    The API keeps input order but leaves out objects lost on a frame; when a frame has fewer
    geometries than objects, the ones present are matched, order kept, to the objects they
    overlap most on the previous frame.
    """
    height, width = first_mask.shape
    previous = [first_mask == obj_id for obj_id in ids]
    labels = [first_mask.astype(np.uint8)]
    for frame_items in answer:
        masks = [geometry_mask(item, height, width) for item in frame_items]
        if len(masks) > len(ids):
            raise AssertionError(f"{len(masks)} geometries on a frame for {len(ids)} objects")
        choices = list(itertools.combinations(range(len(ids)), len(masks)))
        scores = [
            sum(_overlap(previous[k], m) for k, m in zip(chosen, masks, strict=True))
            for chosen in choices
        ]
        best = choices[int(np.argmax(scores))]
        label = np.zeros((height, width), dtype=np.uint8)
        current = [np.zeros((height, width), dtype=bool) for _ in ids]
        for k, mask in zip(best, masks, strict=True):
            label[mask] = ids[k]
            current[k] = mask
        previous = [cur if cur.any() else prev for cur, prev in zip(current, previous, strict=True)]
        labels.append(label)
    return labels


def error_of(response: requests.Response) -> dict[str, Any]:
    """The ``detail`` object of a JSON error answer (fails when the body is not that)."""
    body = response.json()
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, dict) or "error" not in detail or "field" not in detail:
        raise AssertionError(f"not a JSON error answer: {response.status_code} {body!r:.300}")
    return detail


def env_with(base: dict[str, str], **extra: str) -> dict[str, str]:
    """``base`` plus ``extra`` (a copy; the server environment stays untouched)."""
    env = dict(base)
    env.update(extra)
    return env


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
