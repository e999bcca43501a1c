"""A stand-in for the Supervisely platform API v3 on 127.0.0.1, for tests of the tracking paths.

It answers the methods the SDK's client and ``sly_vos.platform`` call on the tracking paths
(``videos.info``, ``figures.info``, ``videos.download-frame``, ``figures.bulk.add``,
``videos.notify-annotation-tool``, ``annotation-tool.run-action``, and ``instance.version``,
which the SDK asks after its first non-200) in the shapes the SDK reads,
holds synthetic videos with their ground truth, records every call, and misbehaves on request.

Why ``http.server.ThreadingHTTPServer``: the faults need the raw connection. ``drop`` closes
it without an answer, ``cut`` and ``slow(mid_answer=True)`` stop halfway through a body, and
``go_away`` closes the listening socket and every open keep-alive connection so the port
refuses. A WSGI or ASGI server (werkzeug, uvicorn) answers 500 when the app gives no answer
and keeps its connections to itself. This module also ships inside every app, where a stdlib
server adds no dependency. Request parsing is http.server's.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import socket
import threading
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

__all__ = ["Call", "PlatformStandIn"]

_PATH_RE = re.compile(r"(?P<base>.*)/v3/(?P<method>[A-Za-z0-9_.\-]+)")
_MAX_BODY = 64 * 1024 * 1024
_FPS = 30.0
TEAM_ID, WORKSPACE_ID, PROJECT_ID, DATASET_ID = 7, 8, 9, 10


@dataclass
class Call:
    """One API call as the stand-in saw it; ``status`` is None while it runs or if dropped."""

    method: str
    body: Any
    started: float  # time.monotonic()
    finished: float | None = None
    status: int | None = None
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, no x-api-key


@dataclass
class _Video:
    id: int
    name: str
    frames: list[np.ndarray]
    masks: list[np.ndarray] | None
    encoded: list[bytes]
    mime: str
    created: str

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])


@dataclass
class _Figure:
    id: int
    video_id: int
    object_id: int
    geometry_type: str
    geometry: dict
    meta: dict
    created: str
    track_id: Any = None
    nn_created: bool = False
    nn_updated: bool = False
    class_id: int | None = None


@dataclass
class _Plan:
    drop: bool = False
    cut: bool = False
    slow_s: float = 0.0
    mid_answer: bool = False
    status: int | None = None
    message: str | None = None
    retry_after: str | None = None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.details = details


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ApiError(400, f"'{name}' must be an integer", field=name)
    return value


def _bbox(geometry_type: str, geometry: dict) -> list[int] | None:
    """``geometryMeta.bbox`` as the platform gives it: [top, left, bottom, right]."""
    try:
        if geometry_type in ("rectangle", "polygon"):
            points = np.asarray(geometry["points"]["exterior"], dtype=float)
            (left, top), (right, bottom) = points.min(axis=0), points.max(axis=0)
            return [int(top), int(left), int(bottom), int(right)]
        if geometry_type == "bitmap":
            raw = base64.b64decode(geometry["bitmap"]["data"])
            with suppress(zlib.error):
                raw = zlib.decompress(raw)
            image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
            x, y = geometry["bitmap"]["origin"]
            height, width = image.shape[:2]
            return [int(y), int(x), int(y) + height - 1, int(x) + width - 1]
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, cv2.error):
        return None
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, stand_in: PlatformStandIn):
        self.stand_in = stand_in
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the platform's nginx
    timeout = 60  # an idle keep-alive connection's thread ends after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every keep-alive answer (nginx sets it too)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.stand_in._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.stand_in._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.stand_in._serve(self)

    def do_GET(self) -> None:
        self.server.stand_in._reply(self, 404, {"error": "Not found"})


class PlatformStandIn:
    """The platform's API v3 on a free port of 127.0.0.1 (a context manager).

    Thread-safe: every handler thread and test thread goes through one lock.
    """

    def __init__(self, token: str | None = None, *, version: str = "6.12.44"):
        self.token = token or secrets.token_hex(64)  # 128 characters, like a platform token
        self.version = version
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._videos: dict[int, _Video] = {}
        self._figures: dict[int, _Figure] = {}
        self._uploaded: dict[int, list[int]] = defaultdict(list)
        self._notes: list[tuple[str, str, dict]] = []  # (kind, str(trackId), data)
        self._video_ids = itertools.count(1001)
        self._figure_ids = itertools.count(50001)
        self._fails: dict[str, deque[tuple[int, str | None, str | None]]] = defaultdict(deque)
        self._drops: dict[str, int] = defaultdict(int)
        self._cuts: dict[str, int] = defaultdict(int)
        self._slows: dict[str, list[Any]] = {}  # method -> [seconds, times left | None, mid]
        self._stops: dict[str, int] = {}  # str(trackId) or "*" -> notifications still "go on"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._gone = False
        self._closing = threading.Event()  # wakes slow answers when the stand-in goes away

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PlatformStandIn:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="platform-stand-in",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self.go_away()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PlatformStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def go_away(self) -> None:
        """Become unreachable: the port refuses connections, open ones are closed."""
        with self._lock:
            if self._gone or self._server is None:
                self._gone = True
                return
            self._gone = True
            connections = list(self._connections)
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            gone = self._gone
        if gone:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    # ------------------------------------------------------------------ data

    def add_video(
        self,
        frames: Sequence[np.ndarray],
        masks: Sequence[np.ndarray] | None = None,
        name: str = "clip",
        fmt: str = "jpeg",
        quality: int = 95,
    ) -> int:
        """A video of these RGB frames, stored encoded (JPEG ``quality`` or PNG) and served
        as the platform serves frames; ``masks`` are kept as its ground truth."""
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
        frames = [np.asarray(f) for f in frames]
        if not frames:
            raise ValueError("a video needs at least one frame")
        shape = frames[0].shape
        for index, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {index} is not HxWx3 uint8")
            if frame.shape != shape:
                raise ValueError(f"frame {index} is {frame.shape}, frame 0 is {shape}")
        kept_masks = None
        if masks is not None:
            kept_masks = [np.array(m, copy=True) for m in masks]
            if len(kept_masks) != len(frames) or any(m.shape != shape[:2] for m in kept_masks):
                raise ValueError("masks must be one HxW array per frame")
        if fmt == "jpeg":
            ext, params, mime = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)], "image/jpeg"
        else:
            ext, params, mime = ".png", [], "image/png"
        encoded = []
        for frame in frames:
            ok, data = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise ValueError("the frame could not be encoded")
            encoded.append(data.tobytes())
        with self._lock:
            video_id = next(self._video_ids)
            self._videos[video_id] = _Video(
                video_id,
                name,
                [f.copy() for f in frames],
                kept_masks,
                encoded,
                mime,
                _now_iso(),
            )
        return video_id

    def add_figure(
        self, video_id: int, object_id: int, frame_index: int, geometry_type: str, geometry: dict
    ) -> int:
        """A figure as a user would have drawn it in the labeling tool."""
        with self._lock:
            video = self._videos.get(video_id)
            if video is None:
                raise ValueError(f"no video {video_id!r}")
            if not 0 <= frame_index < len(video.frames):
                raise ValueError(f"frame {frame_index} is not in video {video_id}")
            figure_id = next(self._figure_ids)
            self._figures[figure_id] = _Figure(
                figure_id,
                video_id,
                int(object_id),
                geometry_type,
                copy.deepcopy(geometry),
                {"frame": int(frame_index)},
                _now_iso(),
            )
        return figure_id

    def figure_json(self, figure_id: int) -> dict:
        """The full figure JSON (the SDK's FigureInfo field names), as the labeling tool puts
        it in ``/track_async``'s ``context.figures``."""
        with self._lock:
            figure = self._figures[figure_id]
            return self._figure_dict(figure)

    def frames(self, video_id: int) -> list[np.ndarray]:
        """The frames as given to ``add_video`` (before encoding)."""
        with self._lock:
            return [f.copy() for f in self._videos[video_id].frames]

    def masks(self, video_id: int) -> list[np.ndarray] | None:
        with self._lock:
            masks = self._videos[video_id].masks
            return None if masks is None else [m.copy() for m in masks]

    def frame_bytes(self, video_id: int, frame_index: int) -> bytes:
        """The encoded frame exactly as served."""
        with self._lock:
            return self._videos[video_id].encoded[frame_index]

    def replace_frame_bytes(self, video_id: int, frame_index: int, data: bytes) -> None:
        """Serve these bytes for one frame (e.g. a corrupt image)."""
        with self._lock:
            self._videos[video_id].encoded[frame_index] = bytes(data)

    # ------------------------------------------------------------------ records

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def uploaded(self, video_id: int) -> list[dict]:
        """Figures added with ``figures.bulk.add``, in order: id, frame, objectId,
        geometryType, geometry, trackId, meta, nnCreated, nnUpdated."""
        with self._lock:
            result = []
            for figure_id in self._uploaded.get(video_id, []):
                figure = self._figures[figure_id]
                result.append(
                    {
                        "id": figure.id,
                        "frame": figure.meta.get("frame"),
                        "objectId": figure.object_id,
                        "geometryType": figure.geometry_type,
                        "geometry": copy.deepcopy(figure.geometry),
                        "trackId": figure.track_id,
                        "meta": copy.deepcopy(figure.meta),
                        "nnCreated": figure.nn_created,
                        "nnUpdated": figure.nn_updated,
                    }
                )
            return result

    def _noted(self, kind: str, track_id: Any) -> list[dict]:
        key = str(track_id)
        with self._lock:
            return [copy.deepcopy(d) for k, t, d in self._notes if k == kind and t == key]

    def progress(self, track_id: Any) -> list[dict]:
        """Progress messages for a track: ``data`` of ``videos:fetch-figures-in-range`` and
        ``payload`` of direct progress actions, in order."""
        return self._noted("progress", track_id)

    def errors(self, track_id: Any) -> list[dict]:
        """Error messages for a track (``videos:tracking-error`` data, direct error payloads)."""
        return self._noted("error", track_id)

    def warnings(self, track_id: Any) -> list[dict]:
        return self._noted("warning", track_id)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (evaluated outside the lock) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._changed:
                self._changed.wait(min(left, 0.05))

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        method: str,
        status: int = 500,
        times: int = 1,
        *,
        message: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` (a JSON error)."""
        with self._lock:
            self._fails[method].extend([(status, message, retry_after)] * times)

    def slow(
        self, method: str, seconds: float, times: int | None = None, *, mid_answer: bool = False
    ) -> None:
        """The next ``times`` calls (all, if None) wait ``seconds`` before answering, or with
        ``mid_answer`` after sending the headers and half of the body."""
        with self._lock:
            self._slows[method] = [float(seconds), times, mid_answer]

    def drop(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls are read, then the connection is closed without an answer."""
        with self._lock:
            self._drops[method] += times

    def cut(self, method: str, times: int = 1) -> None:
        """The next ``times`` answers announce their full length, send half, and close."""
        with self._lock:
            self._cuts[method] += times

    def clear_faults(self, method: str | None = None) -> None:
        """Forget the faults still queued for ``method`` (every method if None)."""
        with self._lock:
            for table in (self._fails, self._drops, self._cuts, self._slows):
                for key in [k for k in table if method is None or k == method]:
                    del table[key]

    def press_stop(self, track_id: Any = None, after_notifications: int = 0) -> None:
        """The tool's stop button: progress notifications of ``track_id`` (any track if None)
        answer ``stopped: true`` once ``after_notifications`` more have answered false."""
        with self._lock:
            self._stops["*" if track_id is None else str(track_id)] = after_notifications

    def _take_faults(self, method: str) -> _Plan:
        plan = _Plan()
        if self._drops.get(method, 0) > 0:
            self._drops[method] -= 1
            plan.drop = True
            return plan
        slow = self._slows.get(method)
        if slow is not None:
            plan.slow_s, plan.mid_answer = slow[0], slow[2]
            if slow[1] is not None:
                slow[1] -= 1
                if slow[1] <= 0:
                    del self._slows[method]
        if self._fails.get(method):
            plan.status, plan.message, plan.retry_after = self._fails[method].popleft()
        if self._cuts.get(method, 0) > 0:
            self._cuts[method] -= 1
            plan.cut = True
        return plan

    def _stopped(self, track_id: Any, counts: bool) -> bool:
        key = str(track_id)
        rule = key if key in self._stops else ("*" if "*" in self._stops else None)
        if rule is None:
            return False
        if counts and self._stops[rule] > 0:
            self._stops[rule] -= 1
            return False
        return self._stops[rule] <= 0

    # ------------------------------------------------------------------ HTTP

    def _serve(self, handler: _Handler) -> None:
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            handler.close_connection = True
            self._reply(handler, 400, {"error": "Bad Content-Length"})
            return
        raw = handler.rfile.read(length)
        path = urlsplit(handler.path).path
        match = _PATH_RE.fullmatch(path)
        if match is None:
            self._reply(handler, 404, {"error": "Not found"})
            return
        method = match["method"]
        try:
            body = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() != "x-api-key"}
        call = Call(method, body, time.monotonic(), path=path, headers=headers)
        with self._lock:
            self._calls.append(call)
            plan = self._take_faults(method)
        if plan.drop:
            self._finish(call, None)
            handler.close_connection = True
            with suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if plan.slow_s and not plan.mid_answer:
            self._closing.wait(plan.slow_s)
        extra: dict[str, str] = {}
        if plan.status is not None:
            status = plan.status
            content: Any = {"error": plan.message or f"Injected fault {status}", "details": {}}
            if plan.retry_after is not None:
                extra["Retry-After"] = plan.retry_after
            content_type = "application/json"
        elif not hmac.compare_digest(
            handler.headers.get("x-api-key", "").encode("latin-1", "replace"),
            self.token.encode("latin-1", "replace"),
        ):
            status, content, content_type = 401, {"error": "Unauthorized"}, "application/json"
        elif bad_json or not isinstance(body, dict):
            status, content = 400, {"error": "The request body must be a JSON object"}
            content_type = "application/json"
        else:
            status, content, content_type = self._dispatch(method, body)
        pause = plan.slow_s if plan.mid_answer else 0.0
        self._reply(
            handler,
            status,
            content,
            content_type,
            extra,
            pause=pause,
            cut=plan.cut,
            before_last_write=lambda: self._finish(call, status),
        )

    def _finish(self, call: Call, status: int | None) -> None:
        """Recorded before the answer's last bytes go out, so a client that has its answer
        always finds the call finished."""
        with self._changed:
            if call.finished is None:
                call.finished = time.monotonic()
                call.status = status
            self._changed.notify_all()

    def _reply(
        self,
        handler: _Handler,
        status: int,
        content: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        *,
        pause: float = 0.0,
        cut: bool = False,
        before_last_write: Callable[[], None] = lambda: None,
    ) -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            if pause or cut:
                handler.end_headers()
                half = len(data) // 2
                handler.wfile.write(data[:half])
                handler.wfile.flush()
                if cut:
                    before_last_write()
                    handler.close_connection = True
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._closing.wait(pause)
                before_last_write()
                handler.wfile.write(data[half:])
            else:
                before_last_write()
                handler.end_headers()
                handler.wfile.write(data)
        except OSError:  # the client gave up (a timeout) or the stand-in went away
            handler.close_connection = True
        finally:
            before_last_write()  # no-op when done already; a failed write still finishes

    # ------------------------------------------------------------------ API methods

    def _dispatch(self, method: str, body: dict) -> tuple[int, Any, str]:
        handlers: dict[str, Callable[[dict], tuple[Any, str]]] = {
            "instance.version": lambda _: ({"version": self.version}, "application/json"),
            "videos.info": self._videos_info,
            "figures.info": self._figures_info,
            "videos.download-frame": self._download_frame,
            "figures.bulk.add": self._figures_bulk_add,
            "videos.notify-annotation-tool": self._notify_annotation_tool,
            "annotation-tool.run-action": self._run_action,
        }
        if method not in handlers:
            return 404, {"error": f"Method {method} not found", "details": {}}, "application/json"
        try:
            with self._lock:
                content, content_type = handlers[method](body)
            return 200, content, content_type
        except _ApiError as exc:
            return exc.status, {"error": str(exc), "details": exc.details}, "application/json"

    def _video(self, video_id: Any) -> _Video:
        video = self._videos.get(video_id) if isinstance(video_id, int) else None
        if video is None:
            raise _ApiError(404, "Video not found", id=video_id)
        return video

    def _frame_of(self, video: _Video, value: Any, name: str) -> int:
        frame = _int(value, name)
        if not 0 <= frame < len(video.frames):
            raise _ApiError(
                400,
                f"Frame index {frame} is out of range",
                frame=frame,
                framesCount=len(video.frames),
            )
        return frame

    def _video_dict(self, video: _Video) -> dict:
        count = len(video.frames)
        return {
            "id": video.id,
            "name": video.name,
            "description": "",
            "hash": base64.b64encode(hashlib.sha256(b"".join(video.encoded)).digest()).decode(),
            "link": None,
            "teamId": TEAM_ID,
            "workspaceId": WORKSPACE_ID,
            "projectId": PROJECT_ID,
            "datasetId": DATASET_ID,
            "pathOriginal": f"/videos/{video.id}/{video.name}.mp4",
            "fileMeta": {
                "codecName": "h264",
                "codecType": "video",
                "duration": count / _FPS,
                "formatName": "mov,mp4,m4a,3gp,3g2,mj2",
                "framesCount": count,
                "framesToTimecodes": [round(i / _FPS, 3) for i in range(count)],
                "height": video.height,
                "index": 0,
                "mime": "video/mp4",
                "rotation": 0,
                "size": str(sum(len(b) for b in video.encoded)),
                "startTime": 0,
                "streams": [],
                "width": video.width,
            },
            "createdAt": video.created,
            "updatedAt": video.created,
            "tags": [],
            "meta": {"videoStreamIndex": 0},
            "customData": {},
            "processingPath": f"1/{video.id}",
        }

    def _figure_dict(self, figure: _Figure) -> dict:
        bbox = _bbox(figure.geometry_type, figure.geometry)
        return {
            "id": figure.id,
            "classId": figure.class_id,
            "updatedAt": figure.created,
            "createdAt": figure.created,
            "entityId": figure.video_id,
            "objectId": figure.object_id,
            "projectId": PROJECT_ID,
            "datasetId": DATASET_ID,
            "geometryType": figure.geometry_type,
            "geometry": copy.deepcopy(figure.geometry),
            "geometryMeta": {"bbox": bbox} if bbox is not None else {},
            "tags": [],
            "meta": copy.deepcopy(figure.meta),
            "area": None,
            "priority": None,
            "customData": {},
            "nnCreated": figure.nn_created,
            "nnUpdated": figure.nn_updated,
            "trackId": figure.track_id,
        }

    def _videos_info(self, body: dict) -> tuple[Any, str]:
        return self._video_dict(self._video(body.get("id"))), "application/json"

    def _figures_info(self, body: dict) -> tuple[Any, str]:
        figure_id = body.get("id")
        figure = self._figures.get(figure_id) if isinstance(figure_id, int) else None
        if figure is None:
            raise _ApiError(404, "Figure not found", id=figure_id)
        full = self._figure_dict(figure)
        fields = body.get("fields")
        if isinstance(fields, list):  # the platform answers the fields asked (and the id)
            full = {k: v for k, v in full.items() if k in fields or k == "id"}
        return full, "application/json"

    def _download_frame(self, body: dict) -> tuple[Any, str]:
        video = self._video(body.get("videoId"))
        frame = self._frame_of(video, body.get("frame"), "frame")
        return video.encoded[frame], video.mime

    def _figures_bulk_add(self, body: dict) -> tuple[Any, str]:
        figures = body.get("figures")
        if not isinstance(figures, list):
            raise _ApiError(400, "'figures' must be a list", field="figures")
        entity = body.get("entityId")
        checked = []
        for position, item in enumerate(figures):
            if not isinstance(item, dict):
                raise _ApiError(400, f"figures[{position}] must be an object")
            video = self._video(item.get("entityId", entity) if entity is None else entity)
            meta = item.get("meta")
            if not isinstance(meta, dict):
                raise _ApiError(400, f"figures[{position}].meta must be an object")
            self._frame_of(video, meta.get("frame"), f"figures[{position}].meta.frame")
            object_id = _int(item.get("objectId"), f"figures[{position}].objectId")
            kind, geometry = item.get("geometryType"), item.get("geometry")
            if not isinstance(kind, str) or not isinstance(geometry, dict):
                raise _ApiError(400, f"figures[{position}] needs geometryType and geometry")
            checked.append((video.id, object_id, kind, geometry, meta, item))
        ids = []
        created = _now_iso()
        for video_id, object_id, kind, geometry, meta, item in checked:  # all or nothing
            figure_id = next(self._figure_ids)
            self._figures[figure_id] = _Figure(
                figure_id,
                video_id,
                object_id,
                kind,
                copy.deepcopy(geometry),
                copy.deepcopy(meta),
                created,
                track_id=item.get("trackId"),
                nn_created=bool(item.get("nnCreated", False)),
                nn_updated=bool(item.get("nnUpdated", False)),
            )
            self._uploaded[video_id].append(figure_id)
            ids.append({"id": figure_id})
        return ids, "application/json"

    def _notify_annotation_tool(self, body: dict) -> tuple[Any, str]:
        kind, data = body.get("type"), body.get("data")
        if not isinstance(kind, str) or not isinstance(data, dict):
            raise _ApiError(400, "'type' and 'data' are required")
        track = data.get("trackId")
        note = {
            "videos:fetch-figures-in-range": "progress",
            "videos:tracking-error": "error",
            "videos:tracking-warning": "warning",
        }.get(kind, kind)
        self._notes.append((note, str(track), copy.deepcopy(data)))
        return {"stopped": self._stopped(track, counts=note == "progress")}, "application/json"

    def _run_action(self, body: dict) -> tuple[Any, str]:
        action, payload = body.get("action"), body.get("payload")
        if not isinstance(action, str) or not isinstance(payload, dict):
            raise _ApiError(400, "'action' and 'payload' are required")
        if action == "figures/setDirectTrackingProgress":
            note = {"error": "error", "warning": "warning"}.get(payload.get("type"), "progress")
            self._notes.append((note, str(payload.get("trackId")), copy.deepcopy(payload)))
        else:
            self._notes.append((action, str(payload.get("trackId")), copy.deepcopy(payload)))
        return {"success": True}, "application/json"
