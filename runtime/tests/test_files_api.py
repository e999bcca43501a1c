"""``/track-api-files`` in process: checks before reading, one model pass for all objects,
and the mapping of every error to its JSON answer (``errors.to_http_exception``)."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sly_vos import errors, limits
from sly_vos.app import TrackingApp
from sly_vos.dev.client import bitmap_geometry, encode_frame, track_settings
from sly_vos.model_thread import ModelThread
from sly_vos.platform import PlatformError
from sly_vos.tracking import TrackerOutputError
from sly_vos.validation import InputError


class Recorder:
    """A tracker that records the label masks it is given and echoes them."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def track(self, frames: Any, label_mask: np.ndarray) -> Any:
        self.calls.append(label_mask.copy())
        for _ in frames:
            yield label_mask.copy()


@pytest.fixture()
def bare_app() -> TrackingApp:
    """The serving class without ``__init__`` (no SDK server, no weights): only what
    ``track_api_files`` touches."""
    app = object.__new__(TrackingApp)
    app.tracker = Recorder()
    app.model_thread = ModelThread()
    return app


def _files(count: int = 2) -> tuple[list[io.BytesIO], dict[str, Any]]:
    frame = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:9, 4:9] = True
    files = [io.BytesIO(encode_frame(frame)) for _ in range(count)]
    return files, track_settings(count, [bitmap_geometry(mask)])


class _CountingFile(io.BytesIO):
    reads = 0

    def read(self, *args: Any) -> bytes:
        _CountingFile.reads += 1
        return super().read(*args)


def test_frame_count_limit_is_checked_before_any_file_is_read(
    bare_app: TrackingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real MAX_FRAMES (1000) coincides with Starlette's own cap of 1000 files per form,
    # so over HTTP Starlette answers first; this checks the app's own check behind it.
    monkeypatch.setattr(limits, "MAX_FRAMES", 2)
    files, request = _files(3)
    counting = [_CountingFile(f.getvalue()) for f in files]
    _CountingFile.reads = 0
    with pytest.raises(InputError) as raised:
        bare_app.track_api_files(counting, request)
    assert (raised.value.status, raised.value.field) == (413, "files")
    assert "MAX_FRAMES=2" in str(raised.value)
    assert _CountingFile.reads == 0


def test_all_objects_go_through_one_model_pass(bare_app: TrackingApp) -> None:
    files, request = _files(3)
    second = np.zeros((32, 32), bool)
    second[20:30, 20:30] = True
    request["input_geometries"].append(bitmap_geometry(second))
    answer = bare_app.track_api_files(files, request)
    (seen,) = bare_app.tracker.calls
    assert sorted(np.unique(seen).tolist()) == [0, 1, 2]
    assert [len(frame) for frame in answer] == [2, 2]


@pytest.mark.parametrize(
    ("error", "status", "field", "words"),
    [
        (InputError("frames", "over a limit", 413), 413, "frames", "over a limit"),
        (NotImplementedError("Tracker.track"), 501, "model", "model.py"),
        (TrackerOutputError("track() mask 2 has shape"), 500, "model", "mask 2"),
        (PlatformError("videos.info", "HTTP 503", 503), 502, "platform", "videos.info"),
        (errors.RequestNotFound("no such request"), 404, "context.inference_request_uuid", "no"),
        (RuntimeError("boom"), 500, None, "RuntimeError: boom"),
    ],
)
def test_errors_map_to_json_answers(
    error: Exception, status: int, field: str | None, words: str
) -> None:
    http = errors.to_http_exception(error)
    assert http.status_code == status
    assert http.detail["field"] == field
    assert words in http.detail["error"]


def test_unexpected_errors_name_no_server_path() -> None:
    error = KeyError("/root/.cache/supervisely/app_data/cache/video_7/frame_00031.png")
    message = errors.user_message(error)
    assert "KeyError" in message and "/root" not in message and "<path>" in message


def test_requests_are_processed_one_at_a_time(bare_app: TrackingApp) -> None:
    """Concurrent requests never decode or track at the same time, so memory holds one
    request's frames, not one per waiting client."""
    active = 0
    most = 0
    guard = threading.Lock()

    class Slow:
        def track(self, frames: Any, label_mask: np.ndarray) -> Any:
            nonlocal active, most
            with guard:
                active += 1
                most = max(most, active)
            try:
                for _ in frames:
                    time.sleep(0.02)
                    yield label_mask.copy()
            finally:
                with guard:
                    active -= 1

    bare_app.tracker = Slow()

    def call(_: int) -> Any:
        files, request = _files(2)
        return bare_app.track_api_files(files, request)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    assert most == 1
    assert all(len(answer) == 1 for answer in answers)
