"""sly_vos.platform against the platform stand-in, and the stand-in against the SDK's client.

The SDK's own ``supervisely.Api`` talking to the stand-in proves the stand-in speaks the real
wire format; our client then sends the same bodies for the same calls (compared as the
stand-in recorded them). Fault tests use a short HttpPolicy and check only that a call ends
within ``policy.worst_case_s()`` plus a slack computed from the policy.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from sly_vos.dev.synthetic import make_clip
from sly_vos.platform import (
    FIGURE_FIELDS,
    FigureRecord,
    PlatformClient,
    PlatformConfigError,
    PlatformError,
    VideoInfo,
)
from sly_vos.testing.platform import PlatformStandIn
from sly_vos.transport import HttpPolicy

FAST = HttpPolicy(
    attempts=3, backoff_s=0.05, backoff_max_s=0.2, connect_timeout_s=0.5, read_timeout_s=0.4
)
TRACK = "4f1c2a9e-track"
RECT = {"points": {"exterior": [[5, 4], [30, 20]], "interior": []}}


def bound(policy: HttpPolicy) -> float:
    """The policy's bound plus scheduling slack on a loaded 2-core machine."""
    return policy.worst_case_s() + 0.25 * policy.attempts


def timed(call):
    """(exception or result, seconds)."""
    start = time.monotonic()
    try:
        result = call()
    except Exception as exc:  # the tests inspect it
        result = exc
    return result, time.monotonic() - start


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def figure(frame: int, object_id: int = 11, **extra) -> dict:
    return {
        "objectId": object_id,
        "geometryType": "rectangle",
        "geometry": RECT,
        "meta": {"frame": frame, **extra},
        "trackId": TRACK,
        "nnCreated": True,
        "nnUpdated": True,
    }


@pytest.fixture(scope="module")
def clip():
    return make_clip(num_frames=8, height=48, width=64, ids=(3, 7), seed=1)


@pytest.fixture
def stand_in():
    with PlatformStandIn() as server:
        yield server


@pytest.fixture
def video(stand_in, clip):
    return stand_in.add_video(clip.frames, clip.masks)


@pytest.fixture
def client(stand_in):
    with PlatformClient(stand_in.url, stand_in.token, FAST) as platform:
        yield platform


@pytest.fixture(scope="module")
def sly():
    return pytest.importorskip("supervisely")


@pytest.fixture
def sdk(sly, stand_in, monkeypatch):
    monkeypatch.setenv("SUPERVISELY_SKIP_HTTPS_USER_HELPER_CHECK", "1")
    for name in ("SUPERVISELY_API_SERVER_ADDRESS", "SUPERVISELY_TASK_ID", "TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    return sly.Api(stand_in.url, stand_in.token)


def bodies(stand_in, method):
    return [c.body for c in stand_in.calls_to(method)]


# ---------------------------------------------------------------- the SDK's client


def test_sdk_reads_video_info(sdk, stand_in, video):
    info = sdk.video.get_info_by_id(video)
    assert (info.id, info.name, info.frames_count) == (video, "clip", 8)
    assert (info.frame_width, info.frame_height) == (64, 48)
    assert info.file_meta["framesCount"] == 8
    assert bodies(stand_in, "videos.info") == [{"id": video, "forceMetadataForLinks": True}]
    assert sdk.video.get_info_by_id(video + 1000) is None  # a 404, as the SDK expects it


def test_sdk_downloads_frames(sdk, stand_in, video, clip):
    one = sdk.video.frame.download_np(video, 2)
    assert one.shape == (48, 64, 3) and psnr(one, clip.frames[2]) > 35
    assert bodies(stand_in, "videos.download-frame") == [{"videoId": video, "frame": 2}]


def test_sdk_reads_figure_info(sly, sdk, stand_in, video, clip):
    geometry = sly.Bitmap(clip.masks[1] == 3).to_json()
    figure_id = stand_in.add_figure(video, 11, 1, "bitmap", geometry)
    info = sdk.video.figure.get_info_by_id(figure_id)
    assert (info.id, info.object_id, info.frame_index) == (figure_id, 11, 1)
    assert (info.geometry_type, info.geometry) == ("bitmap", geometry)
    ys, xs = np.nonzero(clip.masks[1] == 3)
    box = info.bbox
    assert (box.top, box.left, box.bottom, box.right) == (ys.min(), xs.min(), ys.max(), xs.max())
    assert bodies(stand_in, "figures.info") == [{"id": figure_id, "fields": list(FIGURE_FIELDS)}]


def test_sdk_appends_figures(sdk, stand_in, video):
    from supervisely.video_annotation.key_id_map import KeyIdMap

    keys, key_id_map = [uuid.uuid4(), uuid.uuid4()], KeyIdMap()
    sdk.video.figure._append_bulk(video, [figure(3), figure(4)], keys, key_id_map)
    uploaded = stand_in.uploaded(video)
    assert [key_id_map.get_figure_id(k) for k in keys] == [u["id"] for u in uploaded]
    assert [(u["frame"], u["objectId"], u["trackId"]) for u in uploaded] == [
        (3, 11, TRACK),
        (4, 11, TRACK),
    ]
    assert uploaded[0]["geometry"] == RECT and uploaded[0]["nnCreated"] is True
    assert bodies(stand_in, "figures.bulk.add") == [
        {"entityId": video, "figures": [figure(3), figure(4)]}
    ]


def test_sdk_notifies_the_labeling_tool(sdk, stand_in, video):
    assert sdk.video.notify_progress(TRACK, video, 0, 7, 1, 7) is False
    stand_in.press_stop(TRACK)
    assert sdk.video.notify_progress(TRACK, video, 0, 7, 2, 7) is True
    sdk.video.notify_tracking_error(TRACK, "RuntimeError", "boom")
    sdk.vid_ann_tool.set_direct_tracking_progress("session", video, TRACK, (0, 7), 3, 7)
    sdk.vid_ann_tool.set_direct_tracking_error("session", video, TRACK, "RuntimeError: boom")
    assert [p["progress"]["current"] for p in stand_in.progress(TRACK)] == [1, 2, 3]
    assert [e["error"]["message"] for e in stand_in.errors(TRACK)] == ["RuntimeError: boom"] * 2
    assert bodies(stand_in, "annotation-tool.run-action")[0] == {
        "sessionId": "session",
        "action": "figures/setDirectTrackingProgress",
        "payload": {
            "trackId": TRACK,
            "videoId": video,
            "frameRange": [0, 7],
            "progress": {"current": 3, "total": 7},
        },
    }


def test_sdk_sees_the_platform_errors(sly, sdk, stand_in, video):
    with pytest.raises(requests.HTTPError) as caught:
        sdk.video.frame.download_np(video, 8)
    assert caught.value.response.status_code == 400
    assert "out of range" in caught.value.response.json()["error"]
    assert len(stand_in.calls_to("instance.version")) == 1  # asked after the first non-200
    with pytest.raises(requests.HTTPError) as caught:
        sly.Api(stand_in.url, "0" * 128).video.get_info_by_id(video)
    assert caught.value.response.status_code == 401


# ---------------------------------------------------------------- same bodies as the SDK


def _pairs(sdk, client, video, figure_id):
    from supervisely.video_annotation.key_id_map import KeyIdMap

    return {
        "video_info": (
            "videos.info",
            lambda: sdk.video.get_info_by_id(video),
            lambda: client.video_info(video),
        ),
        "figure_info": (
            "figures.info",
            lambda: sdk.video.figure.get_info_by_id(figure_id),
            lambda: client.figure_info(figure_id),
        ),
        "download_frame": (
            "videos.download-frame",
            lambda: sdk.video.frame.download_np(video, 3),
            lambda: client.download_frame(video, 3),
        ),
        "add_figures": (
            "figures.bulk.add",
            lambda: sdk.video.figure._append_bulk(
                video, [figure(2), figure(5)], [uuid.uuid4(), uuid.uuid4()], KeyIdMap()
            ),
            lambda: client.add_figures(video, [figure(2), figure(5)]),
        ),
        "notify_progress": (
            "videos.notify-annotation-tool",
            lambda: sdk.video.notify_progress(TRACK, video, 2, 6, 3, 8),
            lambda: client.notify_progress(TRACK, video, (2, 6), 3, 8),
        ),
        "notify_progress_tracked": (
            "videos.notify-annotation-tool",
            lambda: sdk.video.notify_progress(
                TRACK, video, 2, 6, 3, 8, extra_data={"trackedFigures": {str(figure_id): 2}}
            ),
            lambda: client.notify_progress(TRACK, video, (2, 6), 3, 8, {figure_id: 2}),
        ),
        "notify_error": (
            "videos.notify-annotation-tool",
            lambda: sdk.video.notify_tracking_error(TRACK, "RuntimeError", "boom"),
            lambda: client.notify_error(TRACK, "RuntimeError: boom"),
        ),
        "direct_progress": (
            "annotation-tool.run-action",
            lambda: sdk.vid_ann_tool.set_direct_tracking_progress(
                "session-1", video, TRACK, (2, 6), 3, 8
            ),
            lambda: client.direct_progress("session-1", video, TRACK, (2, 6), 3, 8),
        ),
        "direct_error": (
            "annotation-tool.run-action",
            lambda: sdk.vid_ann_tool.set_direct_tracking_error(
                "session-1", video, TRACK, "RuntimeError: boom"
            ),
            lambda: client.direct_error("session-1", video, TRACK, "RuntimeError: boom"),
        ),
    }


PAIRS = [
    "video_info",
    "figure_info",
    "download_frame",
    "add_figures",
    "notify_progress",
    "notify_progress_tracked",
    "notify_error",
    "direct_progress",
    "direct_error",
]


@pytest.mark.parametrize("name", PAIRS)
def test_same_request_as_the_sdk(name, sdk, client, stand_in, video):
    figure_id = stand_in.add_figure(video, 11, 2, "rectangle", RECT)
    method, by_sdk, by_us = _pairs(sdk, client, video, figure_id)[name]
    by_sdk()
    by_us()
    calls = stand_in.calls_to(method)
    assert len(calls) == 2 and [c.status for c in calls] == [200, 200]
    assert calls[1].body == calls[0].body
    assert calls[1].path == calls[0].path == f"/public/api/v3/{method}"
    assert calls[1].headers["content-type"] == calls[0].headers["content-type"]


def test_tracked_figures_name_the_real_source_figures(client, stand_in, video):
    """The SDK's MaskTracking passes a boolean as source figure id ({"True": n}); we do not."""
    client.notify_progress(TRACK, video, (0, 3), 1, 3, tracked_figures={50001: 2, "50002": 1})
    assert stand_in.progress(TRACK)[0]["trackedFigures"] == {"50001": 2, "50002": 1}


def test_frames_decode_exactly_as_the_sdk(sdk, client, video):
    assert np.array_equal(client.download_frame(video, 5), sdk.video.frame.download_np(video, 5))


# ---------------------------------------------------------------- our client


def test_video_and_figure_info(client, stand_in, video):
    assert client.video_info(video) == VideoInfo(video, "clip", 8, 64, 48)
    figure_id = stand_in.add_figure(video, 21, 4, "rectangle", RECT)
    assert client.figure_info(figure_id) == FigureRecord(figure_id, 21, 4, "rectangle", RECT)
    assert stand_in.figure_json(figure_id)["meta"] == {"frame": 4}


def test_synthetic_frames_round_trip(client, stand_in, clip):
    jpeg = stand_in.add_video(clip.frames, clip.masks)
    png = stand_in.add_video(clip.frames, name="lossless", fmt="png")
    for index, original in enumerate(clip.frames):
        got = client.download_frame(jpeg, index)
        assert got.dtype == np.uint8 and got.shape == original.shape
        assert psnr(got, original) > 35  # JPEG quality 95
        assert np.array_equal(client.download_frame(png, index), original)
    assert all(np.array_equal(a, b) for a, b in zip(stand_in.masks(jpeg), clip.masks, strict=True))


def test_add_figures_returns_ids_in_order_and_chunks_by_100(client, stand_in, video):
    many = [figure(i % 8, object_id=np.int64(11 + i % 2)) for i in range(150)]
    ids = client.add_figures(video, many)
    uploaded = stand_in.uploaded(video)
    assert ids == [u["id"] for u in uploaded] and len(set(ids)) == 150
    assert [u["objectId"] for u in uploaded] == [11 + i % 2 for i in range(150)]
    assert [len(b["figures"]) for b in bodies(stand_in, "figures.bulk.add")] == [100, 50]
    assert client.add_figures(video, []) == []


def test_notify_progress_returns_the_stop_button(client, stand_in, video):
    stand_in.press_stop(TRACK, after_notifications=2)
    answers = [client.notify_progress(TRACK, video, (0, 7), n, 7) for n in range(1, 5)]
    assert answers == [False, False, True, True]
    assert client.notify_progress("another-track", video, (0, 7), 1, 7) is False
    client.notify_error(TRACK, "RuntimeError: boom")
    client.direct_error("s", video, TRACK, "ValueError: bad")
    assert [e["error"]["message"] for e in stand_in.errors(TRACK)] == [
        "RuntimeError: boom",
        "ValueError: bad",
    ]


def test_undecodable_frame_names_the_frame(client, stand_in, video):
    stand_in.replace_frame_bytes(video, 2, b"<html>not an image</html>")
    with pytest.raises(PlatformError, match="frame 2 ") as caught:
        client.download_frame(video, 2)
    assert caught.value.kind == "answer"


def test_frame_past_the_end_is_a_4xx_not_retried(client, stand_in, video):
    with pytest.raises(PlatformError, match="out of range") as caught:
        client.download_frame(video, 8)
    assert (caught.value.status, caught.value.method) == (400, "videos.download-frame")
    assert len(stand_in.calls_to("videos.download-frame")) == 1


def test_wrong_token_is_401_not_retried(stand_in, video):
    with PlatformClient(stand_in.url, "wrong-token", FAST) as wrong:
        with pytest.raises(PlatformError) as caught:
            wrong.video_info(video)
    assert caught.value.status == 401 and len(stand_in.calls) == 1


def test_concurrent_calls_share_one_client(client, stand_in, clip):
    png = stand_in.add_video(clip.frames, fmt="png")
    wrong: list[int] = []

    def work(worker: int) -> None:
        for n in range(8):
            index = (worker + n) % 8
            if not np.array_equal(client.download_frame(png, index), clip.frames[index]):
                wrong.append(index)
            client.notify_progress(f"track-{worker}", png, (0, 7), n, 8)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len(stand_in.calls) == 96 and {c.status for c in stand_in.calls} == {200}
    assert all(len(stand_in.progress(f"track-{w}")) == 8 for w in range(6))


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retryable_status_then_success(status, client, stand_in, video):
    stand_in.fail("videos.info", status, times=1)
    assert client.video_info(video).frames_count == 8
    assert [c.status for c in stand_in.calls_to("videos.info")] == [status, 200]


def test_persistent_500_ends_within_the_bound(client, stand_in, video):
    stand_in.fail("videos.info", 500, times=100)
    error, seconds = timed(lambda: client.video_info(video))
    assert isinstance(error, PlatformError) and error.status == 500
    assert f"after {FAST.attempts} attempts" in str(error)
    assert len(stand_in.calls_to("videos.info")) == FAST.attempts
    assert seconds <= bound(FAST)


@pytest.mark.parametrize("status", [400, 403, 404, 409, 413, 422])
def test_4xx_is_not_retried(status, client, stand_in, video):
    stand_in.fail("videos.info", status, times=5, retry_after="1")
    with pytest.raises(PlatformError) as caught:
        client.video_info(video)
    assert caught.value.status == status and caught.value.kind == "http"
    assert len(stand_in.calls_to("videos.info")) == 1


def test_retry_after_is_honoured_only_up_to_the_cap(client, stand_in, video):
    stand_in.fail("videos.info", 429, times=2, retry_after="3600")
    stand_in.fail("figures.info", 503, times=100, retry_after="Wed, 21 Oct 2099 07:28:00 GMT")
    info, seconds = timed(lambda: client.video_info(video))
    assert isinstance(info, VideoInfo) and seconds <= bound(FAST)
    error, seconds = timed(lambda: client.figure_info(1))
    assert isinstance(error, PlatformError) and error.status == 503 and seconds <= bound(FAST)
    assert len(stand_in.calls_to("figures.info")) == FAST.attempts


def test_slow_answer_past_the_read_timeout_ends_within_the_bound(client, stand_in, video):
    stand_in.slow("videos.info", FAST.attempt_s * 4)
    error, seconds = timed(lambda: client.video_info(video))
    assert isinstance(error, PlatformError) and error.kind == "timeout" and error.status is None
    assert len(stand_in.calls_to("videos.info")) == FAST.attempts
    assert seconds <= bound(FAST)


def test_one_slow_answer_is_retried(client, stand_in, video):
    stand_in.slow("videos.info", FAST.attempt_s * 4, times=1)
    assert client.video_info(video).id == video
    assert len(stand_in.calls_to("videos.info")) == 2


def test_a_body_that_stalls_halfway_ends_within_the_bound(client, stand_in, video):
    stand_in.slow("videos.download-frame", FAST.attempt_s * 4, mid_answer=True)
    error, seconds = timed(lambda: client.download_frame(video, 1))
    assert isinstance(error, PlatformError) and error.kind == "timeout"
    assert len(stand_in.calls_to("videos.download-frame")) == FAST.attempts
    assert seconds <= bound(FAST)


@pytest.mark.parametrize("fault", ["drop", "cut"])
def test_a_lost_connection_is_retried(fault, client, stand_in, video, clip):
    client.video_info(video)  # the next call reuses this keep-alive connection
    getattr(stand_in, fault)("videos.download-frame", times=1)
    assert psnr(client.download_frame(video, 4), clip.frames[4]) > 35
    assert [c.status for c in stand_in.calls_to("videos.download-frame")] == [
        None if fault == "drop" else 200,
        200,
    ]


def test_connections_lost_every_time_end_within_the_bound(client, stand_in, video):
    stand_in.drop("videos.info", times=100)
    error, seconds = timed(lambda: client.video_info(video))
    assert isinstance(error, PlatformError) and error.kind == "connection"
    assert len(stand_in.calls_to("videos.info")) == FAST.attempts
    assert seconds <= bound(FAST)


def test_unreachable_platform_ends_within_the_bound(client, stand_in, video):
    client.video_info(video)  # a pooled connection that the stand-in closes as it goes
    stand_in.go_away()
    error, seconds = timed(lambda: client.video_info(video))
    assert isinstance(error, PlatformError) and error.kind == "unreachable"
    assert f"{FAST.attempts} attempts" in str(error)
    assert seconds <= bound(FAST)


@pytest.mark.parametrize(
    ("fault", "calls", "added", "kind"),
    [
        (("fail", 503), 2, 1, None),  # refused before it was applied: retried
        (("fail", 429), 2, 1, None),
        (("fail", 500), 1, 0, "http"),  # may have been applied: not retried
        (("fail", 504), 1, 0, "http"),
        (("drop",), 1, 0, "connection"),
        (("cut",), 1, 1, "connection"),  # applied, the answer lost: a retry would add twice
        (("slow",), 1, 1, "timeout"),
    ],
)
def test_add_figures_retries_only_what_proves_nothing_was_added(
    fault, calls, added, kind, client, stand_in, video
):
    name, *args = fault
    if name == "slow":
        stand_in.slow("figures.bulk.add", FAST.attempt_s * 1.5, times=1)
    else:
        getattr(stand_in, name)("figures.bulk.add", *args)
    result, seconds = timed(lambda: client.add_figures(video, [figure(6)]))
    stand_in.wait_for(lambda: all(c.finished for c in stand_in.calls), timeout=FAST.attempt_s * 4)
    if kind is None:
        assert result == [u["id"] for u in stand_in.uploaded(video)]
    else:
        assert isinstance(result, PlatformError) and result.kind == kind
        if kind != "http":
            assert "not retried" in str(result)
    assert len(stand_in.calls_to("figures.bulk.add")) == calls
    assert len(stand_in.uploaded(video)) == added
    assert seconds <= bound(FAST)


def test_errors_never_show_the_token(stand_in, video):
    messages = []
    with PlatformClient(stand_in.url, stand_in.token, FAST) as client:
        stand_in.fail("videos.info", 400, message=f"invalid x-api-key {stand_in.token} given")
        stand_in.fail("figures.info", 500, times=5, message=f"key={stand_in.token}")
        stand_in.slow("videos.download-frame", FAST.attempt_s * 3)
        for call in (
            lambda: client.video_info(video),
            lambda: client.figure_info(1),
            lambda: client.download_frame(video, 0),
        ):
            error, _ = timed(call)
            assert isinstance(error, PlatformError)
            messages.append(str(error))
        stand_in.go_away()
        messages.append(str(timed(lambda: client.notify_error(TRACK, "x"))[0]))
    with PlatformClient(stand_in.url, stand_in.token, FAST) as client:
        messages.append(repr(client))
    assert "<token>" in messages[0]
    here = str(Path(__file__).resolve().parent.parent)
    for message in messages:
        assert stand_in.token not in message and stand_in.token[:16] not in message
        assert here not in message


# ---------------------------------------------------------------- from_request


def test_from_request_takes_the_body_credentials(stand_in, video):
    body = {"api_token": stand_in.token, "server_address": stand_in.url + "/"}
    with PlatformClient.from_request(body, env={}, policy=FAST) as client:
        assert client.server_address == stand_in.url
        assert client.video_info(video).id == video


def test_from_request_context_token_with_env_server(stand_in, video):
    body = {"context": {"apiToken": stand_in.token, "videoId": video}}
    env = {"SERVER_ADDRESS": stand_in.url, "API_TOKEN": "the-apps-own-token"}
    with PlatformClient.from_request(body, env=env, policy=FAST) as client:
        assert client.video_info(video).id == video


def test_from_request_api_token_beats_context_token(stand_in, video):
    body = {"api_token": stand_in.token, "context": {"apiToken": "stale"}}
    with PlatformClient.from_request(body, env={"SERVER_ADDRESS": stand_in.url}, policy=FAST) as c:
        assert c.video_info(video).id == video


def test_from_request_without_a_body_token_uses_the_env_pair(stand_in, video):
    """As the SDK's middleware: a server_address alone does not make a per-request Api."""
    body = {"server_address": "http://elsewhere.invalid", "context": {}}
    env = {"SERVER_ADDRESS": stand_in.url, "API_TOKEN": stand_in.token}
    with PlatformClient.from_request(body, env=env, policy=FAST) as client:
        assert client.server_address == stand_in.url
        assert client.video_info(video).id == video
    with PlatformClient.from_request(None, env=env, policy=FAST) as client:
        assert client.video_info(video).id == video


def test_from_request_api_server_address_and_task_id(sly, stand_in, video, monkeypatch):
    env = {
        "SERVER_ADDRESS": "http://elsewhere.invalid",
        "API_TOKEN": stand_in.token,
        "SUPERVISELY_API_SERVER_ADDRESS": stand_in.url + "/alternative/api",
        "SUPERVISELY_TASK_ID": "4242",
    }
    with PlatformClient.from_request({}, env=env, policy=FAST) as client:
        client.video_info(video)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SUPERVISELY_SKIP_HTTPS_USER_HELPER_CHECK", "1")
    sly.Api().video.get_info_by_id(video)
    ours, theirs = stand_in.calls_to("videos.info")
    assert ours.path == theirs.path == "/alternative/api/v3/videos.info"
    assert ours.headers["x-task-id"] == theirs.headers["x-task-id"] == "4242"


@pytest.mark.parametrize(
    ("body", "env", "field"),
    [
        (None, {}, "SERVER_ADDRESS"),
        ({"api_token": "t"}, {}, "SERVER_ADDRESS"),
        ({"server_address": "http://platform"}, {}, "SERVER_ADDRESS"),
        ({}, {"SERVER_ADDRESS": "http://platform"}, "API_TOKEN"),
        ({"context": {"apiToken": None}}, {"SERVER_ADDRESS": "http://platform"}, "API_TOKEN"),
        ({"api_token": "t\r\nx-evil: 1"}, {"SERVER_ADDRESS": "http://platform"}, "api_token"),
        ({"api_token": "t", "server_address": "http://"}, {}, "server_address"),
        ({}, {"SERVER_ADDRESS": "platform:80", "API_TOKEN": "t\u00e9"}, "API_TOKEN"),
    ],
)
def test_from_request_names_what_is_missing(body, env, field):
    with pytest.raises(PlatformConfigError) as caught:
        PlatformClient.from_request(body, env=env)
    assert caught.value.field == field and field in str(caught.value)


def test_policy_bound_and_checks():
    assert HttpPolicy().worst_case_s() == pytest.approx(113.0)  # as HttpPolicy's docstring says
    assert HttpPolicy(attempts=1).worst_case_s() == pytest.approx(35.0)
    assert FAST.worst_case_s() >= FAST.attempts * FAST.attempt_s
    for bad in ({"attempts": 0}, {"read_timeout_s": 0}, {"backoff_s": -1.0}):
        with pytest.raises(ValueError):
            HttpPolicy(**bad)


# ---------------------------------------------------------------- the stand-in itself


def test_stand_in_refuses_what_the_platform_refuses(stand_in, video):
    url = f"{stand_in.url}/public/api/v3/videos.info"
    assert requests.post(url, json={"id": video}, timeout=5).status_code == 401
    headers = {"x-api-key": stand_in.token}
    assert requests.post(url, json={"id": video}, headers=headers, timeout=5).status_code == 200
    unknown = f"{stand_in.url}/public/api/v3/no.such.method"
    assert requests.post(unknown, json={}, headers=headers, timeout=5).status_code == 404
    bad = requests.post(url, data=b"{", headers=headers, timeout=5)
    assert bad.status_code == 400 and "error" in bad.json()
    assert requests.get(stand_in.url, timeout=5).status_code == 404


def test_stand_in_records_calls_and_waits(stand_in, client, video):
    done = threading.Event()
    threading.Thread(target=lambda: (client.add_figures(video, [figure(1)]), done.set())).start()
    assert stand_in.wait_for(lambda: len(stand_in.uploaded(video)) == 1, timeout=5)
    assert done.wait(5)
    assert not stand_in.wait_for(lambda: len(stand_in.uploaded(video)) == 2, timeout=0.1)
    (call,) = stand_in.calls_to("figures.bulk.add")
    assert call.status == 200 and call.started <= call.finished
    assert "x-api-key" not in call.headers
    full = stand_in.figure_json(stand_in.uploaded(video)[0]["id"])
    assert {"id", "objectId", "entityId", "geometryType", "geometry", "meta"} <= set(full)
    assert full["geometryMeta"]["bbox"] == [4, 5, 20, 30]
