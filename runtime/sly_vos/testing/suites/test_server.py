"""The app served by a real uvicorn server on 127.0.0.1, spoken to over real HTTP.

One server for the session (the plugin's ``server``). Covers the session routes, tracking
through ``/track-api-files`` (all objects tracked jointly, polygons answered as polygons),
and every bad request: each gets a JSON 4xx naming the field, and the next valid request
still succeeds. The labeling tool's own endpoints are in ``test_protocol.py``.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sly_vos import checkpoints, limits
from sly_vos.appspec import AppSpec
from sly_vos.dev import synthetic
from sly_vos.testing import ModelProfile, tracked_or_raise, tracked_or_refused
from sly_vos.testing.server import (
    Server,
    answer_to_label_masks,
    bitmap_geometry,
    clip_request,
    encode_frame,
    error_of,
    free_port,
    geometry_mask,
    png_bomb,
    polygon_geometries,
    post_track,
    raw_bitmap_geometry,
    track_settings,
)

# The quality bar through the server on the synthetic clip (see synthetic.py).
MIN_MEAN_J = 0.6
MIN_GAIN_OVER_COPY = 0.2


@pytest.fixture(scope="module")
def clip() -> synthetic.Clip:
    return synthetic.make_clip(num_frames=20, ids=(3, 7), seed=0)


@pytest.fixture(scope="module")
def ok_status(model_profile: ModelProfile) -> int:
    """What a valid tracking request answers: 200, or 501 while the model is a stub."""
    return 501 if model_profile.stub else 200


def assert_still_serving(server: Server, clip: synthetic.Clip, ok_status: int) -> None:
    """A small valid request right after a bad one is answered normally."""
    files, request = clip_request(clip.frames[:3], clip.masks[0], clip.ids)
    response = post_track(server.base_url, files, request)
    assert response.status_code == ok_status, response.text[:500] + "\n" + server.log_tail()
    if response.status_code == 200:
        assert len(response.json()) == 2


# ---------------------------------------------------------------- routes


def test_is_ready(server: Server) -> None:
    response = server.post("/is_ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_session_info(server: Server, app_spec: AppSpec) -> None:
    response = server.post("/get_session_info")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["app_version"] == app_spec.settings.app_version
    assert info["model_name"] == app_spec.settings.model_name
    assert info["device"] == "cpu"
    assert info["task type"] == "tracking"
    assert info["limits"]["max_frames"] == limits.MAX_FRAMES
    assert info["limits"]["max_objects"] == limits.MAX_OBJECTS
    declared = checkpoints.declared(app_spec.model)
    if declared:  # the server runs without $<PREFIX>_CHECKPOINT: the default
        default = next(c for c in declared if c.default)
        assert info["checkpoint"]["name"] == default.name
        assert info["checkpoint"]["files"] == list(default.files)
    else:
        assert info["checkpoint"] is None


def test_an_unknown_checkpoint_stops_the_app_at_start_with_one_line(
    app_root: Path, server_env: dict[str, str], app_spec: AppSpec
) -> None:
    variable = app_spec.settings.checkpoint_env
    env = dict(server_env, **{variable: "no-such-checkpoint"})
    command = [sys.executable, "-m", "uvicorn", "main:model.app", "--app-dir", "src"]
    done = subprocess.run(
        command + ["--port", str(free_port())],
        cwd=app_root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"${variable}='no-such-checkpoint'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    declared = checkpoints.declared(app_spec.model)
    if declared:
        assert lines[0].endswith("valid: " + checkpoints.listing(declared))


# ---------------------------------------------------------------- tracking


@pytest.mark.needs_tracking
@pytest.mark.quality
def test_round_trip_tracks_every_object(server: Server, clip: synthetic.Clip) -> None:
    files, request = clip_request(clip.frames, clip.masks[0], clip.ids)
    response = tracked_or_raise(post_track(server.base_url, files, request))
    assert response.status_code == 200, response.text[:500] + "\n" + server.log_tail()
    answer = response.json()
    assert len(answer) == len(clip.frames) - 1  # one entry per frame after the annotated one
    for frame_items in answer:
        assert len(frame_items) <= len(clip.ids)
        assert all(item["type"] == "bitmap" for item in frame_items)
    preds = answer_to_label_masks(answer, clip.masks[0], clip.ids)
    quality = synthetic.mean_j(preds, clip.masks, clip.ids)
    baseline = synthetic.mean_j([clip.masks[0]] * len(clip.masks), clip.masks, clip.ids)
    print(f"mean J through the server {quality:.3f}, copy-first-mask baseline {baseline:.3f}")
    assert quality >= MIN_MEAN_J
    assert quality >= baseline + MIN_GAIN_OVER_COPY


@pytest.mark.needs_tracking
def test_objects_are_tracked_jointly(server: Server, clip: synthetic.Clip) -> None:
    """One label mask for all objects: answered masks never overlap (tracked one by one, as
    the SDK does, both objects would claim the pixels where they cross)."""
    files, request = clip_request(clip.frames, clip.masks[0], clip.ids)
    response = tracked_or_raise(post_track(server.base_url, files, request))
    assert response.status_code == 200, response.text[:500]
    height, width = clip.masks[0].shape
    for frame_items in response.json():
        masks = [geometry_mask(item, height, width) for item in frame_items]
        coverage = np.sum(masks, axis=0) if masks else np.zeros((height, width))
        assert coverage.max() <= 1


@pytest.mark.needs_tracking
@pytest.mark.quality
def test_fully_covered_geometry_leaves_a_gap(server: Server, clip: synthetic.Clip) -> None:
    """Three geometries, the middle one hidden under the third: ids 1 and 3 reach the model
    (non-consecutive), the hidden one yields nothing, the others keep their order."""
    first, second = (clip.masks[0] == obj_id for obj_id in clip.ids)
    rows, cols = np.nonzero(second)
    hidden = np.zeros_like(second)
    hidden[rows[len(rows) // 2], cols[len(cols) // 2]] = True  # one pixel inside `second`
    assert not (hidden & first).any()
    files = [encode_frame(frame) for frame in clip.frames[:6]]
    geometries = [bitmap_geometry(first), bitmap_geometry(hidden), bitmap_geometry(second)]
    response = tracked_or_raise(
        post_track(server.base_url, files, track_settings(len(files), geometries))
    )
    assert response.status_code == 200, response.text[:500] + "\n" + server.log_tail()
    answer = response.json()
    assert len(answer) == 5
    for index, frame_items in enumerate(answer, start=1):
        assert len(frame_items) == 2, f"frame {index}: {len(frame_items)} geometries"
        got_first, got_second = (geometry_mask(item, *first.shape) for item in frame_items)
        for got, obj_id in ((got_first, clip.ids[0]), (got_second, clip.ids[1])):
            assert synthetic.iou(got.astype(np.uint8), (clip.masks[index] == obj_id), 1) > 0.5


@pytest.mark.needs_tracking
def test_polygon_input_is_answered_with_polygons(server: Server, clip: synthetic.Clip) -> None:
    first, second = (clip.masks[0] == obj_id for obj_id in clip.ids)
    files = [encode_frame(frame) for frame in clip.frames[:4]]
    geometries = polygon_geometries(first)[:1] + [bitmap_geometry(second)]
    response = tracked_or_raise(
        post_track(server.base_url, files, track_settings(len(files), geometries))
    )
    assert response.status_code == 200, response.text[:500] + "\n" + server.log_tail()
    for frame_items in response.json():
        kinds = [item["type"] for item in frame_items]
        assert set(kinds) <= {"polygon", "bitmap"} and kinds.count("bitmap") <= 1
        if "bitmap" in kinds:  # the second object; the first one's polygons come before it
            assert kinds[-1] == "bitmap"


def test_one_frame_answers_nothing_to_track(server: Server, clip: synthetic.Clip) -> None:
    files, request = clip_request(clip.frames[:1], clip.masks[0], clip.ids)
    response = post_track(server.base_url, files, request)
    assert response.status_code == 200, response.text[:500]
    assert response.json() == []


def test_grayscale_and_rgba_frames_are_accepted(
    server: Server, clip: synthetic.Clip, ok_status: int
) -> None:
    gray = [encode_frame(frame.mean(axis=2).astype(np.uint8)) for frame in clip.frames[:2]]
    alpha = np.full(clip.frames[0].shape[:2] + (1,), 255, dtype=np.uint8)
    rgba = [encode_frame(np.concatenate([clip.frames[2], alpha], axis=2))]
    geometries = [bitmap_geometry(clip.masks[0] == obj_id) for obj_id in clip.ids]
    files = gray + rgba
    response = post_track(server.base_url, files, track_settings(len(files), geometries))
    assert response.status_code == ok_status, response.text[:500]


def test_a_model_not_implemented_yet_answers_501_and_keeps_serving(
    server: Server, clip: synthetic.Clip, model_profile: ModelProfile
) -> None:
    if not model_profile.stub:
        pytest.skip("the model tracks: this is the stub starter's answer")
    files, request = clip_request(clip.frames[:3], clip.masks[0], clip.ids)
    response = post_track(server.base_url, files, request)
    assert response.status_code == 501, response.text[:500]
    detail = error_of(response)
    assert "model.py" in detail["error"] and detail["field"] == "model"
    assert server.post("/is_ready").status_code == 200
    bad = post_track(server.base_url, files, "{not json")
    assert bad.status_code == 400 and error_of(bad)["field"] == "settings"


@pytest.mark.needs_tracking
@pytest.mark.parametrize(("height", "width"), synthetic.ODD_SHAPES, ids=lambda v: str(v))
def test_odd_frame_shapes_are_tracked_or_refused_with_a_json_4xx(
    server: Server, clip: synthetic.Clip, ok_status: int, height: int, width: int
) -> None:
    """A shape the limits allow (one-pixel sides, a 2x6000 strip) is tracked, or refused
    with a JSON 4xx naming the field; a 500 (OpenCV's remap on a 2x6000 strip) never."""
    strip = synthetic.strip_clip(height, width)
    files, request = clip_request(strip.frames, strip.masks[0], strip.ids)
    response = post_track(server.base_url, files, request)
    if tracked_or_refused(response):
        labels = answer_to_label_masks(response.json(), strip.masks[0], strip.ids)
        assert [m.shape for m in labels] == [(height, width)] * len(strip.frames)
    assert_still_serving(server, clip, ok_status)


# ---------------------------------------------------------------- bad requests

Request = tuple[list[bytes], Any]


def _valid(clip: synthetic.Clip, count: int = 3) -> Request:
    return clip_request(clip.frames[:count], clip.masks[0], clip.ids)


def _replace_file(clip: synthetic.Clip, index: int, data: bytes) -> Request:
    files, request = _valid(clip)
    files[index] = data
    return files, request


def _with_settings(clip: synthetic.Clip, **changes: Any) -> Request:
    files, request = _valid(clip)
    return files, {**request, **changes}


def _with_geometry(clip: synthetic.Clip, geometry: dict[str, Any]) -> Request:
    files, request = _valid(clip)
    return files, {**request, "input_geometries": [geometry]}


def _zlib_bomb_geometry() -> dict[str, Any]:
    """Bitmap data of ~20 KB that inflates to 20 MB (refused before it is inflated)."""
    data = base64.b64encode(zlib.compress(b"\0" * 20_000_000, 9)).decode("ascii")
    return {"type": "bitmap", "data": {"bitmap": {"origin": [0, 0], "data": data}}}


def _side_over_frame_limit() -> int:
    return math.isqrt(limits.MAX_FRAME_PIXELS) + 1


def _strip_over_side_limit(clip: synthetic.Clip) -> Request:
    """A 1 x (MAX_FRAME_SIDE + 1) frame: few pixels, one side too long (read from headers)."""
    files, request = _valid(clip)
    files[1] = png_bomb(limits.MAX_FRAME_SIDE + 1, 1)
    return files, request


# name -> (request builder, status, field named in the answer)
BAD_REQUESTS: dict[str, tuple[Callable[[synthetic.Clip], Request], int, str]] = {
    "undecodable image": (
        lambda c: _replace_file(c, 1, b"this is not an image" * 8),
        400,
        "files[1]",
    ),
    "truncated png": (
        lambda c: _replace_file(c, 2, encode_frame(c.frames[2])[:-600]),
        400,
        "files[2]",
    ),
    "truncated jpeg": (
        lambda c: _replace_file(c, 1, encode_frame(c.frames[1], "JPEG")[:-400]),
        400,
        "files[1]",
    ),
    "frames of different sizes": (
        lambda c: _replace_file(c, 1, encode_frame(c.frames[1][:64, :100])),
        422,
        "files[1]",
    ),
    "frame header over MAX_FRAME_PIXELS (decompression bomb)": (
        lambda c: _replace_file(c, 0, png_bomb(_side_over_frame_limit(), _side_over_frame_limit())),
        413,
        "files[0]",
    ),
    "frame header over MAX_FRAME_SIDE (a 1-pixel strip)": (_strip_over_side_limit, 413, "files[1]"),
    "no frames": (lambda c: ([], _valid(c)[1]), 400, "files"),
    "malformed settings JSON": (lambda c: (_valid(c)[0], '{"frame_index": 0,'), 400, "settings"),
    "settings over 1 MB": (
        lambda c: (_valid(c)[0], json.dumps({**_valid(c)[1], "pad": "x" * 1_100_000})),
        400,
        "settings",
    ),
    "settings not an object": (lambda c: (_valid(c)[0], "[1, 2, 3]"), 400, "settings"),
    "frames count mismatch": (lambda c: _with_settings(c, frames=7), 422, "settings.frames"),
    "frames not an integer": (lambda c: _with_settings(c, frames="2"), 400, "settings.frames"),
    "negative frame_index": (
        lambda c: _with_settings(c, frame_index=-1),
        400,
        "settings.frame_index",
    ),
    "unknown direction": (
        lambda c: _with_settings(c, direction="sideways"),
        400,
        "settings.direction",
    ),
    "no geometries": (
        lambda c: _with_settings(c, input_geometries=[]),
        400,
        "settings.input_geometries",
    ),
    "more than 255 objects": (
        lambda c: _with_settings(
            c, input_geometries=_valid(c)[1]["input_geometries"] * (limits.MAX_OBJECTS // 2 + 1)
        ),
        413,
        "settings.input_geometries",
    ),
    "unsupported geometry type": (
        lambda c: _with_geometry(c, {"type": "rectangle", "data": {"points": {}}}),
        400,
        "settings.input_geometries[0].type",
    ),
    "bitmap outside the frame": (
        lambda c: _with_geometry(
            c, raw_bitmap_geometry(np.ones((10, 10), np.uint8), (c.frames[0].shape[1] - 4, 0))
        ),
        422,
        "settings.input_geometries[0]",
    ),
    "mask larger than the frame": (
        lambda c: _with_geometry(
            c, raw_bitmap_geometry(np.ones((c.frames[0].shape[0] + 8, 16), np.uint8))
        ),
        422,
        "settings.input_geometries[0]",
    ),
    "empty mask": (
        lambda c: _with_geometry(c, raw_bitmap_geometry(np.zeros(c.masks[0].shape, np.uint8))),
        422,
        "settings.input_geometries[0]",
    ),
    "bitmap data not base64": (
        lambda c: _with_geometry(
            c, {"type": "bitmap", "data": {"bitmap": {"origin": [0, 0], "data": "@@@x"}}}
        ),
        400,
        "settings.input_geometries[0].bitmap.data",
    ),
    "zlib bomb in bitmap data": (
        lambda c: _with_geometry(c, _zlib_bomb_geometry()),
        413,
        "settings.input_geometries[0].bitmap.data",
    ),
    "polygon outside the frame": (
        lambda c: _with_geometry(
            c,
            {
                "type": "polygon",
                "data": {"points": {"exterior": [[5, 5], [900, 5], [5, 40]], "interior": []}},
            },
        ),
        422,
        "settings.input_geometries[0]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_json_4xx_and_server_keeps_serving(
    server: Server, clip: synthetic.Clip, ok_status: int, case: str
) -> None:
    build, status, field = BAD_REQUESTS[case]
    files, request = build(clip)
    response = post_track(server.base_url, files, request)
    assert response.status_code == status, response.text[:500] + "\n" + server.log_tail()
    detail = error_of(response)
    assert detail["field"] == field
    assert detail["error"].startswith(field), detail["error"]
    assert_still_serving(server, clip, ok_status)


def test_total_pixel_limit_is_checked_from_headers(
    server: Server, clip: synthetic.Clip, ok_status: int
) -> None:
    """Frames each within MAX_FRAME_PIXELS but together over MAX_TOTAL_PIXELS are refused
    from their headers: the files here are a few hundred bytes and never decoded."""
    side = math.isqrt(limits.MAX_FRAME_PIXELS)
    count = limits.MAX_TOTAL_PIXELS // (side * side) + 1
    if count > limits.MAX_FRAMES:
        pytest.skip("MAX_FRAMES is reached before MAX_TOTAL_PIXELS with these limits")
    files = [png_bomb(side, side)] * count
    geometries = [raw_bitmap_geometry(np.ones((8, 8), np.uint8))]
    response = post_track(server.base_url, files, track_settings(count, geometries))
    assert response.status_code == 413, response.text[:500]
    detail = error_of(response)
    assert detail["field"] == "files" and "MAX_TOTAL_PIXELS" in detail["error"]
    assert_still_serving(server, clip, ok_status)


def test_frame_count_limit(server: Server, clip: synthetic.Clip, ok_status: int) -> None:
    count = limits.MAX_FRAMES + 1
    files = [encode_frame(np.zeros((8, 8, 3), np.uint8))] * count
    geometries = [raw_bitmap_geometry(np.ones((8, 8), np.uint8))]
    response = post_track(server.base_url, files, track_settings(count, geometries))
    assert response.status_code in (400, 413), response.text[:500]
    assert error_of(response)["field"] == "files"
    assert_still_serving(server, clip, ok_status)
