"""The labeling tool's endpoints against a stand-in of the Supervisely platform.

The app is the session's real server; the platform is ``PlatformStandIn`` on 127.0.0.1,
holding synthetic videos with ground truth and recording every call. Requests carry
``server_address`` + ``api_token`` like the platform's, except where a test checks that the
app's own ``SERVER_ADDRESS``/``API_TOKEN`` are used. Each test names the defect of the SDK
(supervisely 6.74.51) it guards against where there is one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests

from sly_vos.dev import synthetic
from sly_vos.dev.client import bitmap_geometry, geometry_mask, polygon_geometries
from sly_vos.testing import (
    HttpPolicy,
    ModelProfile,
    call_bound_s,
    job_bound_s,
    tracked_or_refused,
)
from sly_vos.testing.platform import PlatformStandIn
from sly_vos.testing.server import Server, error_of

pytestmark = pytest.mark.protocol

HEIGHT, WIDTH = 96, 128
VIDEO_FRAMES = 24
MIN_MEAN_J = 0.8  # tracked figures against ground truth (optical-flow starter: ~0.95)
READY_WITHIN_S = 2.0
JOB_TIMEOUT_S = 300.0


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def clip() -> synthetic.Clip:
    return synthetic.make_clip(
        num_frames=VIDEO_FRAMES, height=HEIGHT, width=WIDTH, ids=(3, 7), seed=4
    )


@pytest.fixture(scope="module")
def video(platform: PlatformStandIn, clip: synthetic.Clip) -> int:
    return platform.add_video(clip.frames, clip.masks, name="protocol")


class Tool:
    """The labeling tool's side: builds contexts, posts them, waits for the outcome."""

    def __init__(self, server: Server, platform: PlatformStandIn) -> None:
        self.server = server
        self.platform = platform
        self._track = 0

    def track_id(self) -> str:
        self._track += 1
        return f"track-{self._track}-{time.monotonic_ns()}"

    def post(self, path: str, context: Any, *, creds: bool = True, **extra: Any) -> Any:
        body: dict[str, Any] = {"context": context, "state": {}, **extra}
        if creds:
            body.update(server_address=self.platform.url, api_token=self.platform.token)
        return self.server.post(path, json=body, timeout=JOB_TIMEOUT_S)

    def figures(
        self,
        video_id: int,
        frame: int,
        kinds: tuple[str, ...] = ("bitmap", "bitmap"),
        object_ids: tuple[int, ...] = (17, 5),
    ) -> list[int]:
        """Draw the clip's objects on ``frame`` as the user would (one figure per object)."""
        masks = self.platform.masks(video_id)
        assert masks is not None
        ids = [i for i in np.unique(masks[frame]) if i]
        figure_ids = []
        for obj_id, kind, object_id in zip(ids, kinds, object_ids, strict=False):
            shape = masks[frame] == obj_id
            geometry = polygon_geometries(shape)[0] if kind == "polygon" else bitmap_geometry(shape)
            figure_ids.append(
                self.platform.add_figure(video_id, object_id, frame, kind, geometry["data"])
            )
        return figure_ids

    def wait_progress(self, track_id: str, total: int) -> list[dict]:
        """Progress messages of a job until its last frame (or its error) arrived."""

        def done() -> bool:
            progress = self.platform.progress(track_id)
            finished = progress and progress[-1]["progress"]["current"] >= total
            return bool(finished or self.platform.errors(track_id))

        assert self.platform.wait_for(done, JOB_TIMEOUT_S), self.server.log_tail()
        return self.platform.progress(track_id)

    def pull(self, uuid: str, stub_raises: bool = True, **context: Any) -> Iterator[dict]:
        """``/pop_tracking_results`` until the job is finished; yields every answer. A job
        that ended because the model is not implemented raises ``NotImplementedError``
        (``stub_raises``), so a stub's strict expected failures see exactly that."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            answer = self.post("/pop_tracking_results", {"inference_request_uuid": uuid, **context})
            assert answer.status_code == 200, answer.text[:500]
            body = answer.json()
            failed = body["exception"] or {}
            if stub_raises and failed.get("type") == "NotImplementedError":
                raise NotImplementedError(failed.get("message"))
            yield body
            if body["finished"] and not body["pending_results"]:
                return
            time.sleep(0.05)
        raise AssertionError(f"job {uuid} did not finish:\n{self.server.log_tail()}")


@pytest.fixture(scope="module")
def tool(server: Server, platform: PlatformStandIn) -> Tool:
    return Tool(server, platform)


def figure_of(result: list) -> dict:
    """A ``/pop_tracking_results`` result (the SDK's ``FigureInfo``, JSON-encoded as a list)."""
    from supervisely.api.video.video_figure_api import FigureInfo

    return dict(zip(FigureInfo._fields, result, strict=True))


def masks_by_frame(
    figures: list[dict], height: int, width: int
) -> dict[int, dict[int, np.ndarray]]:
    """``{frame: {objectId: mask}}`` of uploaded or pulled figures (polygons rasterised)."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for figure in figures:
        item = {"type": figure["geometryType"], "data": figure["geometry"]}
        mask = geometry_mask(item, height, width)
        frame = out.setdefault(int(figure["frame"]), {})
        frame[figure["objectId"]] = frame.get(figure["objectId"], np.zeros_like(mask)) | mask
    return out


def mean_j(
    found: dict[int, dict[int, np.ndarray]],
    gt: list[np.ndarray],
    objects: dict[int, int],
    frames: list[int],
) -> float:
    """Mean IoU over ``frames`` and objects; ``objects`` maps objectId -> ground-truth id."""
    scores = []
    for frame in frames:
        for object_id, gt_id in objects.items():
            truth = gt[frame] == gt_id
            pred = found.get(frame, {}).get(object_id, np.zeros_like(truth))
            union = np.count_nonzero(truth | pred)
            scores.append(1.0 if union == 0 else np.count_nonzero(truth & pred) / union)
    return float(np.mean(scores))


def gt_objects(
    platform: PlatformStandIn, video_id: int, frame: int, object_ids: tuple[int, ...] = (17, 5)
) -> dict[int, int]:
    masks = platform.masks(video_id)
    assert masks is not None
    ids = [int(i) for i in np.unique(masks[frame]) if i]
    return dict(zip(object_ids, ids, strict=False))


def downloads(platform: PlatformStandIn, video_id: int) -> int:
    return sum(
        1
        for call in platform.calls_to("videos.download-frame")
        if isinstance(call.body, dict) and call.body.get("videoId") == video_id
    )


def track_context(
    video_id: int,
    frame: int,
    frames: int,
    figure_ids: list[int],
    track_id: str,
    direction: str = "forward",
) -> dict[str, Any]:
    return {
        "videoId": video_id,
        "frameIndex": frame,
        "frames": frames,
        "direction": direction,
        "trackId": track_id,
        "objectIds": list(range(len(figure_ids))),
        "figureIds": figure_ids,
    }


def async_context(
    platform: PlatformStandIn,
    video_id: int,
    frame: int,
    frames: int,
    figure_ids: list[int],
    track_id: str,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "videoId": video_id,
        "frameIndex": frame,
        "frames": frames,
        "trackId": track_id,
        "figures": [platform.figure_json(fid) for fid in figure_ids],
        **extra,
    }


def started(response: requests.Response) -> str:
    """The uuid of a started job (a stub's 501 is raised as NotImplementedError)."""
    if response.status_code == 501:
        raise NotImplementedError(response.text[:300])
    assert response.status_code == 200, response.text[:500]
    return response.json()["inference_request_uuid"]


def raise_if_stub_error(platform: PlatformStandIn, track_id: str) -> None:
    """A job of a stub model fails in the background; its one error names the model."""
    errors = platform.errors(track_id)
    if errors and "not implemented" in str(errors[0]):
        raise NotImplementedError(str(errors[0]))


# ---------------------------------------------------------------- /track


@pytest.mark.needs_tracking
@pytest.mark.parametrize(
    ("start", "direction", "expected"),
    [(2, "forward", list(range(3, 11))), (12, "backward", list(range(11, 3, -1)))],
    ids=["forward", "backward"],
)
def test_track_uploads_each_frame_to_the_right_frame(
    tool: Tool,
    platform: PlatformStandIn,
    video: int,
    start: int,
    direction: str,
    expected: list[int],
) -> None:
    """SDK defect 2: backward /track wrote frames k+1.. instead of k-1... Defect 7: the
    source figure id was `true`."""
    figure_ids = tool.figures(video, start, object_ids=(17, 5))
    track_id = tool.track_id()
    context = track_context(video, start, 8, figure_ids, track_id, direction)
    context["objectIds"] = [17, 5]
    answer = tool.post("/track", context)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["message"] == "Tracking has started."
    progress = tool.wait_progress(track_id, 8)
    raise_if_stub_error(platform, track_id)
    assert platform.errors(track_id) == []
    uploaded = [f for f in platform.uploaded(video) if f["trackId"] == track_id]
    assert sorted({f["frame"] for f in uploaded}) == sorted(expected)
    assert {f["objectId"] for f in uploaded} <= {17, 5}
    assert {f["meta"]["sourceFigureId"] for f in uploaded} <= set(figure_ids)
    assert all(f["nnCreated"] for f in uploaded)
    currents = [p["progress"]["current"] for p in progress]
    assert currents == list(range(1, 9)), "one progress message per frame, in order"
    assert set(progress[-1]["trackedFigures"]) <= {str(fid) for fid in figure_ids}
    frames_done = [p["frameRange"] for p in progress]
    assert all(low <= high for low, high in frames_done)


@pytest.mark.needs_tracking
@pytest.mark.quality
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("endpoint", ["/track", "/track_async"])
def test_tracked_figures_match_ground_truth(
    tool: Tool,
    platform: PlatformStandIn,
    video: int,
    clip: synthetic.Clip,
    endpoint: str,
    direction: str,
) -> None:
    start = 4 if direction == "forward" else 19
    frames = 12
    step = 1 if direction == "forward" else -1
    expected = [start + step * i for i in range(1, frames + 1)]
    figure_ids = tool.figures(video, start)
    track_id = tool.track_id()
    if endpoint == "/track":
        context = track_context(video, start, frames, figure_ids, track_id, direction)
        context["objectIds"] = [17, 5]
        assert tool.post("/track", context).status_code == 200
        tool.wait_progress(track_id, frames)
        raise_if_stub_error(platform, track_id)
        figures = [f for f in platform.uploaded(video) if f["trackId"] == track_id]
    else:
        context = async_context(
            platform, video, start, frames, figure_ids, track_id, direction=direction
        )
        uuid = started(tool.post("/track_async", context))
        figures = []
        for body in tool.pull(uuid):
            figures += [figure_of(r) for r in body["pending_results"]]
            if body["exception"]:
                raise_if_stub_error(platform, track_id)
        figures = [
            {
                "frame": f["frame_index"],
                "objectId": f["object_id"],
                "geometryType": f["geometry_type"],
                "geometry": f["geometry"],
            }
            for f in figures
        ]
    found = masks_by_frame(figures, HEIGHT, WIDTH)
    quality = mean_j(found, clip.masks, gt_objects(platform, video, start), expected)
    print(f"{endpoint} {direction}: mean J {quality:.3f}")
    assert quality >= MIN_MEAN_J


@pytest.mark.needs_tracking
def test_polygons_come_back_as_polygons_and_ids_keep_their_gaps(
    tool: Tool, platform: PlatformStandIn, video: int
) -> None:
    figure_ids = tool.figures(video, 6, kinds=("polygon", "bitmap"), object_ids=(40, 2))
    track_id = tool.track_id()
    context = track_context(video, 6, 3, figure_ids, track_id)
    context["objectIds"] = [40, 2]
    assert tool.post("/track", context).status_code == 200
    tool.wait_progress(track_id, 3)
    raise_if_stub_error(platform, track_id)
    assert platform.errors(track_id) == []
    uploaded = [f for f in platform.uploaded(video) if f["trackId"] == track_id]
    assert uploaded, "nothing was uploaded"
    kinds = {
        f["objectId"]: {x["geometryType"] for x in uploaded if x["objectId"] == f["objectId"]}
        for f in uploaded
    }
    assert kinds.get(40, {"polygon"}) == {"polygon"}
    assert kinds.get(2, {"bitmap"}) == {"bitmap"}


# ---------------------------------------------------------------- /track_async


@pytest.mark.needs_tracking
def test_track_async_results_arrive_through_pop(
    tool: Tool, platform: PlatformStandIn, video: int
) -> None:
    """SDK defect 1: /track_async ended 'Finished' with no result at all."""
    figure_ids = tool.figures(video, 1)
    track_id = tool.track_id()
    uuid = started(
        tool.post("/track_async", async_context(platform, video, 1, 6, figure_ids, track_id))
    )
    frames: list[int] = []
    last: dict = {}
    for body in tool.pull(uuid):
        frames += [figure_of(r)["frame_index"] for r in body["pending_results"]]
        last = body
    raise_if_stub_error(platform, track_id)
    assert last["exception"] is None, last["exception"]
    assert last["stage"] == "Finished" and last["progress"] == {"current": 6, "total": 6}
    assert set(frames) <= set(range(2, 8)) and set(frames) >= {2}
    assert frames == sorted(frames), "results arrive in frame order"
    currents = [p["progress"]["current"] for p in platform.progress(track_id)]
    assert currents == sorted(currents) and currents[-1] == 6


@pytest.mark.needs_tracking
def test_pop_with_a_frame_range_takes_only_those_frames(
    tool: Tool, platform: PlatformStandIn, video: int
) -> None:
    """SDK defect: /pop_tracking_results failed without frameRange once results existed."""
    figure_ids = tool.figures(video, 0)
    track_id = tool.track_id()
    uuid = started(
        tool.post("/track_async", async_context(platform, video, 0, 5, figure_ids, track_id))
    )
    for _ in tool.pull(uuid, frameRange=[99, 100]):  # nothing there: everything stays queued
        pass
    raise_if_stub_error(platform, track_id)
    first = tool.post(
        "/pop_tracking_results", {"inference_request_uuid": uuid, "frameRange": [1, 2]}
    ).json()
    rest = tool.post("/pop_tracking_results", {"inference_request_uuid": uuid}).json()
    assert {figure_of(r)["frame_index"] for r in first["pending_results"]} <= {1, 2}
    assert {figure_of(r)["frame_index"] for r in rest["pending_results"]} <= {3, 4, 5}
    assert first["pending_results"] and rest["pending_results"]
    cleared = tool.post("/clear_tracking_results", {"inference_request_uuid": uuid})
    assert cleared.status_code == 200 and cleared.json()["success"] is True


def test_direct_progress_messages_go_to_the_annotation_tool(
    tool: Tool, platform: PlatformStandIn, video: int, model_profile: ModelProfile
) -> None:
    figure_ids = tool.figures(video, 3)
    track_id = tool.track_id()
    context = async_context(
        platform, video, 3, 2, figure_ids, track_id, sessionId="s-1", useDirectProgressMessages=True
    )
    uuid = started(tool.post("/track_async", context))
    list(tool.pull(uuid, stub_raises=False))
    actions = [
        c.body
        for c in platform.calls_to("annotation-tool.run-action")
        if c.body.get("sessionId") == "s-1"
    ]
    assert actions, "direct progress goes through annotation-tool.run-action"
    if model_profile.stub:
        assert platform.errors(track_id), "the stub's error reaches the tool"
    else:
        assert platform.progress(track_id)[-1]["progress"]["current"] == 2


# ---------------------------------------------------------------- /track-api


@pytest.mark.needs_tracking
def test_track_api_answers_frames_by_objects(
    tool: Tool, platform: PlatformStandIn, video: int, clip: synthetic.Clip
) -> None:
    masks = platform.masks(video)
    assert masks is not None
    geometries = [bitmap_geometry(masks[5] == obj_id) for obj_id in clip.ids]
    context = {"videoId": video, "frameIndex": 5, "frames": 4, "input_geometries": geometries}
    answer = tool.post("/track-api", context)
    if answer.status_code == 501:
        raise NotImplementedError(answer.text[:300])
    assert answer.status_code == 200, answer.text[:500]
    rows = answer.json()
    assert len(rows) == 4 and all(len(row) == 2 for row in rows)
    assert all(cell is None or cell["type"] == "bitmap" for row in rows for cell in row)


def test_the_app_uses_its_own_platform_address(
    tool: Tool, platform: PlatformStandIn, video: int
) -> None:
    """Without credentials in the body, the app's SERVER_ADDRESS/API_TOKEN are used."""
    before = len(platform.calls_to("videos.info"))
    context = {
        "videoId": video,
        "frameIndex": 5,
        "frames": 1,
        "input_geometries": [{"type": "rectangle", "data": {}}],
    }
    answer = tool.post("/track-api", context, creds=False)
    assert answer.status_code == 400, answer.text[:300]
    assert len(platform.calls_to("videos.info")) == before + 1


# ---------------------------------------------------------------- malformed requests


def _bad_requests(video: int, platform: PlatformStandIn, figure: int) -> dict[str, tuple]:
    """name -> (path, body or raw bytes, status, field the error names)."""
    figure_json = platform.figure_json(figure)
    base = {
        "videoId": video,
        "frameIndex": 0,
        "frames": 2,
        "trackId": "t",
        "figures": [figure_json],
    }
    return {
        "not json": ("/track_async", b"{nope", 400, "body"),
        "body not an object": ("/track_async", b"[1, 2]", 400, "body"),
        "context not an object": ("/track_async", {"context": "x"}, 400, "context"),
        "no context": ("/track_async", {"state": {}}, 400, "context"),
        "no videoId": (
            "/track_async",
            {"context": {**base, "videoId": None}},
            400,
            "context.videoId",
        ),
        "frames not an integer": (
            "/track_async",
            {"context": {**base, "frames": "2"}},
            400,
            "context.frames",
        ),
        "zero frames": ("/track_async", {"context": {**base, "frames": 0}}, 400, "context.frames"),
        "unknown direction": (
            "/track_async",
            {"context": {**base, "direction": "up"}},
            400,
            "context.direction",
        ),
        "frame past the video": (
            "/track_async",
            {"context": {**base, "frameIndex": VIDEO_FRAMES}},
            422,
            "context.frameIndex",
        ),
        "no frame to track": (
            "/track_async",
            {"context": {**base, "frameIndex": VIDEO_FRAMES - 1}},
            422,
            "context.frameIndex",
        ),
        "no figures": (
            "/track_async",
            {"context": {**base, "figures": []}},
            400,
            "context.figures",
        ),
        "rectangle figure": (
            "/track_async",
            {"context": {**base, "figures": [{**figure_json, "geometryType": "rectangle"}]}},
            400,
            "context.figures[0].geometryType",
        ),
        "geometry outside the frame": (
            "/track_async",
            {
                "context": {
                    **base,
                    "figures": [
                        {
                            **figure_json,
                            "geometryType": "polygon",
                            "geometry": {
                                "points": {"exterior": [[0, 0], [900, 0], [0, 40]], "interior": []}
                            },
                        }
                    ],
                }
            },
            422,
            "context.figures[0]",
        ),
        "track-api past the end": (
            "/track-api",
            {
                "context": {
                    "videoId": video,
                    "frameIndex": VIDEO_FRAMES - 3,
                    "frames": 5,
                    "input_geometries": [{"type": "bitmap", "data": figure_json["geometry"]}],
                }
            },
            422,
            "context.frames",
        ),
        "track without figureIds": (
            "/track",
            {
                "context": {
                    "videoId": video,
                    "frameIndex": 0,
                    "frames": 2,
                    "trackId": "t",
                    "objectIds": [1],
                }
            },
            400,
            "context.figureIds",
        ),
        "track objectIds and figureIds differ": (
            "/track",
            {
                "context": {
                    "videoId": video,
                    "frameIndex": 0,
                    "frames": 2,
                    "trackId": "t",
                    "objectIds": [],
                    "figureIds": [figure],
                }
            },
            400,
            "context",
        ),
        "stop without uuid": (
            "/stop_tracking",
            {"context": {}},
            400,
            "context.inference_request_uuid",
        ),
        "pop without uuid": (
            "/pop_tracking_results",
            {"context": {}},
            400,
            "context.inference_request_uuid",
        ),
        "clear without uuid": (
            "/clear_tracking_results",
            {"context": {}},
            400,
            "context.inference_request_uuid",
        ),
        "pop of an unknown uuid": (
            "/pop_tracking_results",
            {"context": {"inference_request_uuid": "nope"}},
            404,
            "context.inference_request_uuid",
        ),
        "bad frameRange": (
            "/pop_tracking_results",
            {"context": {"inference_request_uuid": "x", "frameRange": [1]}},
            400,
            "context.frameRange",
        ),
    }


BAD_NAMES = [  # the keys of _bad_requests, for the test ids
    "not json",
    "body not an object",
    "context not an object",
    "no context",
    "no videoId",
    "frames not an integer",
    "zero frames",
    "unknown direction",
    "frame past the video",
    "no frame to track",
    "no figures",
    "rectangle figure",
    "geometry outside the frame",
    "track-api past the end",
    "track without figureIds",
    "track objectIds and figureIds differ",
    "stop without uuid",
    "pop without uuid",
    "clear without uuid",
    "pop of an unknown uuid",
    "bad frameRange",
]


@pytest.mark.parametrize("case", BAD_NAMES)
def test_malformed_requests_get_a_json_4xx_before_any_frame_is_downloaded(
    tool: Tool, platform: PlatformStandIn, video: int, case: str
) -> None:
    """SDK defect 4: 500s, and checks only after every frame was downloaded."""
    figure = tool.figures(video, 0)[0]
    cases = _bad_requests(video, platform, figure)
    assert set(cases) == set(BAD_NAMES)
    path, body, status, field = cases[case]
    before = downloads(platform, video)
    if isinstance(body, bytes):
        answer = tool.server.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        body = {**body, "server_address": platform.url, "api_token": platform.token}
        answer = tool.server.post(path, json=body)
    assert answer.status_code == status, answer.text[:500]
    detail = error_of(answer)
    assert detail["field"] == field, detail
    assert downloads(platform, video) == before, "refused requests download no frame"
    assert tool.server.post("/is_ready").status_code == 200


def test_limits_are_checked_against_the_video_before_downloading(
    tool: Tool, platform: PlatformStandIn
) -> None:
    """1001 frames: refused from videos.info alone (the SDK downloaded all of them first)."""
    tiny = [np.zeros((8, 8, 3), np.uint8)] * 1003
    long_video = platform.add_video(tiny, name="long", fmt="png")
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    context = {
        "videoId": long_video,
        "frameIndex": 0,
        "frames": 1001,
        "trackId": "t",
        "figures": [
            {
                "id": 1,
                "objectId": 1,
                "geometryType": "bitmap",
                "geometry": bitmap_geometry(mask)["data"],
            }
        ],
    }
    answer = tool.post("/track_async", context)
    assert answer.status_code == 413, answer.text[:300]
    assert error_of(answer)["field"] == "context.frames"
    assert "MAX_FRAMES" in error_of(answer)["error"]
    assert downloads(platform, long_video) == 0


# ---------------------------------------------------------------- odd frame shapes


@pytest.fixture(scope="module")
def strip_videos(platform: PlatformStandIn) -> dict[tuple[int, int], int]:
    """One video per odd shape (a one-pixel side, a 2x6000 strip), with ground truth."""
    videos = {}
    for shape in synthetic.ODD_SHAPES:
        strip = synthetic.strip_clip(*shape, num_frames=4)
        videos[shape] = platform.add_video(strip.frames, strip.masks, f"strip-{shape}", "png")
    return videos


@pytest.mark.needs_tracking
@pytest.mark.parametrize("shape", synthetic.ODD_SHAPES, ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize("endpoint", ["/track", "/track_async", "/track-api"])
def test_odd_frame_shapes_are_tracked_or_refused_with_a_json_4xx(
    tool: Tool,
    platform: PlatformStandIn,
    strip_videos: dict[tuple[int, int], int],
    endpoint: str,
    shape: tuple[int, int],
) -> None:
    """Frames of any shape the limits allow reach the model and come back at that shape, on
    every endpoint, or are refused up front; the job never fails on its way."""
    video = strip_videos[shape]
    figure_ids = tool.figures(video, 0, kinds=("bitmap",), object_ids=(9,))
    track_id = tool.track_id()
    if endpoint == "/track":
        context = track_context(video, 0, 3, figure_ids, track_id)
        context["objectIds"] = [9]
        if tracked_or_refused(tool.post("/track", context)):
            tool.wait_progress(track_id, 3)
            raise_if_stub_error(platform, track_id)
            assert platform.errors(track_id) == []
            progress = platform.progress(track_id)
            assert progress and progress[-1]["progress"]["current"] == 3
            figures = [f for f in platform.uploaded(video) if f["trackId"] == track_id]
            masks_by_frame(figures, *shape)  # any figure (random weights may lose the
            # object) lies inside the frame
    elif endpoint == "/track_async":
        context = async_context(platform, video, 0, 3, figure_ids, track_id)
        answer = tool.post("/track_async", context)
        if tracked_or_refused(answer):
            last: dict = {}
            for body in tool.pull(started(answer)):
                last = body
            raise_if_stub_error(platform, track_id)
            assert last["exception"] is None, last["exception"]
            assert last["progress"] == {"current": 3, "total": 3}
    else:
        masks = platform.masks(video)
        assert masks is not None
        geometry = bitmap_geometry(masks[0] > 0)
        context = {"videoId": video, "frameIndex": 0, "frames": 3, "input_geometries": [geometry]}
        answer = tool.post("/track-api", context)
        if tracked_or_refused(answer):
            rows = answer.json()
            assert len(rows) == 3 and all(len(row) == 1 for row in rows)
            cells = [cell for row in rows for cell in row if cell is not None]
            masks_by_frame(
                [
                    {"geometryType": c["type"], "geometry": c["data"], "frame": 0, "objectId": 0}
                    for c in cells
                ],
                *shape,
            )
    assert tool.server.post("/is_ready").status_code == 200


# ---------------------------------------------------------------- liveness, stop, faults


def _ready_latencies(server: Server, busy: Callable[[], bool]) -> list[float]:
    latencies = []
    while busy():
        began = time.monotonic()
        assert server.post("/is_ready", timeout=30).status_code == 200
        latencies.append(time.monotonic() - began)
        time.sleep(0.1)
    return latencies


@pytest.fixture()
def slow_frames(platform: PlatformStandIn) -> Iterator[None]:
    platform.slow("videos.download-frame", 0.15)
    yield
    platform.slow("videos.download-frame", 0.0)


@pytest.mark.needs_tracking
@pytest.mark.parametrize("endpoint", ["/track_async", "/track-api"])
def test_is_ready_answers_during_a_request(
    tool: Tool, platform: PlatformStandIn, video: int, slow_frames: None, endpoint: str
) -> None:
    """SDK defect 3: /track-api blocked the event loop for its whole run. The request must
    really track (12 slow frames) for the measurement to mean anything."""
    figure_ids = tool.figures(video, 0)
    if endpoint == "/track-api":
        masks = platform.masks(video)
        assert masks is not None
        geometries = [bitmap_geometry(masks[0] > 0)]
        context: dict[str, Any] = {
            "videoId": video,
            "frameIndex": 0,
            "frames": 12,
            "input_geometries": geometries,
        }
    else:
        context = async_context(platform, video, 0, 12, figure_ids, tool.track_id())
    done = threading.Event()
    outcome: dict[str, Any] = {}
    before = downloads(platform, video)

    def request() -> None:
        try:
            outcome["answer"] = tool.post(endpoint, context)
            if endpoint == "/track_async" and outcome["answer"].status_code == 200:
                uuid = outcome["answer"].json()["inference_request_uuid"]
                outcome["last"] = list(tool.pull(uuid))[-1]
        except NotImplementedError as exc:
            outcome["stub"] = exc
        finally:
            done.set()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(request)
        latencies = _ready_latencies(tool.server, lambda: not done.is_set())
    if "stub" in outcome or outcome["answer"].status_code == 501:
        raise NotImplementedError(str(outcome.get("stub") or outcome["answer"].text[:300]))
    assert outcome["answer"].status_code == 200, outcome["answer"].text[:300]
    assert downloads(platform, video) - before >= 13, "the request did not track its frames"
    assert len(latencies) >= 3, "the request ended before /is_ready could be asked"
    assert max(latencies) < READY_WITHIN_S, latencies


@pytest.mark.needs_tracking
def test_stop_takes_effect_within_one_frame(
    tool: Tool, platform: PlatformStandIn, video: int, slow_frames: None
) -> None:
    """SDK defect 5: stop was honoured only after every frame had been tracked."""
    figure_ids = tool.figures(video, 0)
    track_id = tool.track_id()
    before = downloads(platform, video)
    uuid = started(
        tool.post("/track_async", async_context(platform, video, 0, 20, figure_ids, track_id))
    )
    assert platform.wait_for(
        lambda: len(platform.progress(track_id)) >= 3 or bool(platform.errors(track_id)), 120
    ), tool.server.log_tail()
    raise_if_stub_error(platform, track_id)
    stop = tool.post("/stop_tracking", {"inference_request_uuid": uuid})
    assert stop.status_code == 200, stop.text
    at_stop = len(platform.progress(track_id))
    bodies = list(tool.pull(uuid))
    done = bodies[-1]["progress"]["current"]
    assert bodies[-1]["stopped"] and bodies[-1]["stage"] == "Cancelled"
    assert done <= at_stop + 1, f"{done} frames tracked, {at_stop} when stopped"
    assert downloads(platform, video) - before <= done + 3  # frames tracked, plus read-ahead


@pytest.mark.needs_tracking
def test_the_tools_stop_button_stops_track_within_one_frame(
    tool: Tool, platform: PlatformStandIn, video: int, slow_frames: None
) -> None:
    """The stop button reaches /track through the progress answers (``stopped: true``)."""
    figure_ids = tool.figures(video, 0)
    track_id = tool.track_id()
    platform.press_stop(track_id, after_notifications=2)
    context = track_context(video, 0, 20, figure_ids, track_id)
    last = list(tool.pull(started(tool.post("/track", context))))[-1]
    raise_if_stub_error(platform, track_id)
    assert last["stopped"] and last["stage"] == "Cancelled", last
    frames = {f["frame"] for f in platform.uploaded(video) if f["trackId"] == track_id}
    assert 1 <= len(frames) <= 4, f"{len(frames)} frames uploaded after a stop at the 3rd"


@pytest.mark.needs_tracking
def test_platform_errors_are_retried_then_reported_once(
    tool: Tool,
    platform: PlatformStandIn,
    video: int,
    platform_policy: HttpPolicy,
) -> None:
    """A 500 is retried; a platform that keeps failing ends the job within the policy's
    bound with one clear error (SDK defect 6: a second, empty 'Exception: ')."""
    figure_ids = tool.figures(video, 0)
    track_id = tool.track_id()
    platform.fail("videos.download-frame", 500, times=1)
    platform.drop("videos.download-frame", times=1)
    uuid = started(
        tool.post("/track_async", async_context(platform, video, 0, 3, figure_ids, track_id))
    )
    last = list(tool.pull(uuid))[-1]
    assert last["exception"] is None and last["progress"]["current"] == 3, last
    track_id = tool.track_id()
    platform.fail("videos.download-frame", 503, times=10_000)
    began = time.monotonic()
    uuid = started(
        tool.post("/track_async", async_context(platform, video, 0, 3, figure_ids, track_id))
    )
    try:
        last = list(tool.pull(uuid))[-1]
    finally:
        platform.fail("videos.download-frame", 500, times=0)
        platform.clear_faults("videos.download-frame")
    elapsed = time.monotonic() - began
    assert elapsed <= job_bound_s(platform_policy, frames=1), elapsed
    assert last["stage"] == "Error" and "videos.download-frame" in last["exception"]["message"]
    errors = platform.errors(track_id)
    assert len(errors) == 1, errors
    assert "videos.download-frame" in str(errors[0]) and "/root" not in str(errors[0])


def test_an_unreachable_platform_is_a_502_within_the_bound(
    tool: Tool,
    platform: PlatformStandIn,
    platform_policy: HttpPolicy,
    video: int,
    closed_port: int,
) -> None:
    figure_ids = tool.figures(video, 0)
    context = async_context(platform, video, 0, 2, figure_ids, tool.track_id())
    body = {
        "context": context,
        "server_address": f"http://127.0.0.1:{closed_port}",
        "api_token": "nobody-listens",
    }
    began = time.monotonic()
    answer = tool.server.post("/track_async", json=body, timeout=JOB_TIMEOUT_S)
    elapsed = time.monotonic() - began
    assert answer.status_code == 502, answer.text[:300]
    assert error_of(answer)["field"] == "platform"
    assert elapsed <= call_bound_s(platform_policy), elapsed
    assert tool.server.post("/is_ready").status_code == 200


def test_a_slow_platform_is_a_502_within_the_bound(
    tool: Tool,
    platform: PlatformStandIn,
    platform_policy: HttpPolicy,
    video: int,
) -> None:
    figure_ids = tool.figures(video, 0)
    context = async_context(platform, video, 0, 2, figure_ids, tool.track_id())
    platform.slow("videos.info", platform_policy.read_timeout_s + 2)
    began = time.monotonic()
    try:
        answer = tool.post("/track_async", context)
    finally:
        platform.slow("videos.info", 0.0)
    elapsed = time.monotonic() - began
    assert answer.status_code == 502, answer.text[:300]
    assert "videos.info" in error_of(answer)["error"]
    assert elapsed <= call_bound_s(platform_policy), elapsed


# ---------------------------------------------------------------- several annotators


@pytest.mark.needs_tracking
def test_four_annotators_at_once(tool: Tool, platform: PlatformStandIn) -> None:
    """4 concurrent /track_async on 4 videos: all complete, results never cross, one model
    pass at a time (the downloads of one job never interleave another's), and a waiting job
    has downloaded nothing."""
    videos, contexts = [], []
    for seed in range(4):
        other = synthetic.make_clip(
            num_frames=8, height=HEIGHT, width=WIDTH, ids=(1, 2), seed=40 + seed
        )
        video_id = platform.add_video(other.frames, other.masks, name=f"annotator-{seed}")
        figure_ids = tool.figures(video_id, 0, object_ids=(100 + seed, 200 + seed))
        videos.append(video_id)
        contexts.append(async_context(platform, video_id, 0, 6, figure_ids, tool.track_id()))
    with ThreadPoolExecutor(4) as pool:
        uuids = list(pool.map(lambda c: started(tool.post("/track_async", c)), contexts))
        outcomes = list(pool.map(lambda u: list(tool.pull(u)), uuids))
    for seed, (video_id, bodies) in enumerate(zip(videos, outcomes, strict=True)):
        results = [figure_of(r) for body in bodies for r in body["pending_results"]]
        assert bodies[-1]["exception"] is None, bodies[-1]["exception"]
        assert bodies[-1]["progress"]["current"] == 6
        assert {r["entity_id"] for r in results} <= {video_id}
        assert {r["object_id"] for r in results} <= {100 + seed, 200 + seed}
    order = [
        c.body["videoId"]
        for c in platform.calls_to("videos.download-frame")
        if c.body.get("videoId") in videos
    ]
    blocks = [v for i, v in enumerate(order) if i == 0 or order[i - 1] != v]
    assert len(blocks) == len(set(blocks)) == 4, f"downloads interleaved: {blocks}"
