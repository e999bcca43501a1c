"""The labeling tool's requests in parts: ``/track``, ``/track_async`` and ``/track-api``.

``endpoints`` strings these parts together, one flow per request kind. Planning runs in the
request thread: the context has been validated, the video's size and length are read from
the platform (``videos.info``), the frame range, the object count and every geometry are
checked against them and drawn into one label mask, so a bad request is answered with a JSON
4xx before a single frame is downloaded. The running parts run on the model thread: frames
are downloaded in order (one ahead of the model), each tracked frame becomes figures typed
like its input, progress goes to the tool per frame (its answer can stop the run), and an
error is reported to the tool once, with a message that names no server path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from supervisely.api.video.video_figure_api import FigureInfo

from . import geometry, limits
from .errors import user_message
from .jobs import Job
from .platform import PlatformClient, PlatformError, VideoInfo
from .schemas import TrackApiContext, TrackAsyncContext, TrackContext, _RangeContext
from .tracking import SupportsTrack, track_stream
from .validation import InputError, check_count, check_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedObject:
    """Label id k of the plan's mask is ``objects[k - 1]``."""

    object_id: int | None
    figure_id: int | str | None
    kind: str


@dataclass
class Plan:
    """A checked request, ready to run."""

    client: PlatformClient
    video: VideoInfo
    frame_indexes: list[int]
    label: np.ndarray
    objects: list[TrackedObject]
    track_id: Any = "auto"
    session_id: Any = None
    direct_progress: bool = False
    tracked: dict[str, int] = field(default_factory=dict)

    def count_tracked(self, shapes: list[tuple[TrackedObject, Any]]) -> None:
        """One more frame for every input figure visible in ``shapes`` (the tool's counts)."""
        for figure_id in {str(obj.figure_id) for obj, _ in shapes if obj.figure_id is not None}:
            self.tracked[figure_id] = self.tracked.get(figure_id, 0) + 1

    @property
    def frames(self) -> int:
        """Frames after the annotated one."""
        return len(self.frame_indexes) - 1

    def frame_range(self, done: int) -> tuple[int, int]:
        """Ascending range of the annotated frame and the ``done`` frames after it."""
        shown = self.frame_indexes[: done + 1]
        return min(shown), max(shown)


# ---------------------------------------------------------------- planning


def frame_range(ctx: _RangeContext, video: VideoInfo, clip: bool) -> list[int]:
    """Frame indexes to track, checked against the video's length.

    ``clip``: a range running past either end of the video is shortened to it (the tool
    asks for its usual count near the ends; the SDK's ``/track`` does the same); otherwise
    it is refused.
    """
    count = video.frames_count
    if not 0 <= ctx.frame_index < count:
        raise InputError(
            "context.frameIndex",
            f"frame {ctx.frame_index} is not in the video (frames 0..{count - 1})",
            422,
        )
    indexes = ctx.frame_indexes()
    inside = [i for i in indexes if 0 <= i < count]
    if len(inside) < len(indexes):
        if not clip:
            raise InputError(
                "context.frames",
                f"{ctx.frames} frames {ctx.direction} from frame {ctx.frame_index} run past the "
                f"video's frames 0..{count - 1}",
                422,
            )
        logger.info(
            "tracking range shortened to the video",
            extra={"asked": ctx.frames, "kept": len(inside) - 1},
        )
    if len(inside) < 2:
        raise InputError(
            "context.frameIndex",
            f"no frame to track {ctx.direction} of frame {ctx.frame_index} "
            f"(the video has frames 0..{count - 1})",
            422,
        )
    check_count(len(inside), field="context.frames")
    check_size(video.height, video.width, len(inside), "context.videoId", "context.frames")
    return inside


def _check_object_count(count: int, field_name: str) -> None:
    if count > limits.MAX_OBJECTS:
        raise InputError(
            field_name,
            f"{count} objects exceed the limit MAX_OBJECTS={limits.MAX_OBJECTS} per request "
            "(objects share one uint8 label mask)",
            413,
        )


def _draw(items: Sequence[tuple[str, Any, str]], video: VideoInfo, type_key: str) -> np.ndarray:
    """Check every geometry's type (``<field>.<type_key>``), then draw them all."""
    for kind, _, where in items:
        geometry.check_kind(kind, f"{where}.{type_key}")
    return geometry.draw(items, video.height, video.width)


def plan_track(client: PlatformClient, ctx: TrackContext) -> Plan:
    """``/track``: figures by id (fetched with ``figures.info``), results uploaded."""
    _check_object_count(len(ctx.figure_ids), "context.figureIds")
    video = client.video_info(ctx.video_id)
    indexes = frame_range(ctx, video, clip=True)
    items, objects = [], []
    for index, (figure_id, object_id) in enumerate(
        zip(ctx.figure_ids, ctx.object_ids, strict=True)
    ):
        figure = client.figure_info(figure_id)
        items.append((figure.geometry_type, figure.geometry, f"context.figureIds[{index}]"))
        objects.append(TrackedObject(object_id, figure_id, figure.geometry_type))
    label = _draw(items, video, "geometryType")
    return Plan(client, video, indexes, label, objects, track_id=ctx.track_id)


def plan_track_async(client: PlatformClient, ctx: TrackAsyncContext) -> Plan:
    """``/track_async``: full figures in the context, results pulled by the tool."""
    _check_object_count(len(ctx.figures), "context.figures")
    video = client.video_info(ctx.video_id)
    indexes = frame_range(ctx, video, clip=True)
    items = [
        (figure.geometry_type, figure.geometry, f"context.figures[{index}]")
        for index, figure in enumerate(ctx.figures)
    ]
    objects = [TrackedObject(f.object_id, f.id, f.geometry_type) for f in ctx.figures]
    label = _draw(items, video, "geometryType")
    return Plan(
        client,
        video,
        indexes,
        label,
        objects,
        track_id=ctx.track_id,
        session_id=ctx.session_id,
        direct_progress=ctx.direct_progress,
    )


def plan_track_api(client: PlatformClient, ctx: TrackApiContext) -> Plan:
    """``/track-api``: ``{type, data}`` geometries in, an N x K answer out."""
    _check_object_count(len(ctx.input_geometries), "context.input_geometries")
    video = client.video_info(ctx.video_id)
    indexes = frame_range(ctx, video, clip=False)
    items = [
        (item.type, item.data, f"context.input_geometries[{index}]")
        for index, item in enumerate(ctx.input_geometries)
    ]
    objects = [TrackedObject(None, None, item.type) for item in ctx.input_geometries]
    label = _draw(items, video, "type")
    return Plan(client, video, indexes, label, objects)


# ---------------------------------------------------------------- running


class FrameFeed:
    """The plan's frames, downloaded in order with one frame of read-ahead.

    The model works on frame t while frame t+1 downloads; at most two frames are held.
    Closing the feed (a stop) abandons the read-ahead.
    """

    def __init__(self, client: PlatformClient, video_id: int, indexes: Sequence[int]) -> None:
        self._client = client
        self._video_id = video_id
        self._indexes = list(indexes)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-feed")

    def _fetch(self, position: int) -> Future[np.ndarray]:
        return self._pool.submit(
            self._client.download_frame, self._video_id, self._indexes[position]
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            ahead = self._fetch(0) if self._indexes else None
            for position in range(len(self._indexes)):
                assert ahead is not None
                frame = ahead.result()
                ahead = self._fetch(position + 1) if position + 1 < len(self._indexes) else None
                yield frame
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)


def tracked_masks(
    tracker: SupportsTrack, plan: Plan, job: Job | None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, mask)`` for every frame after the annotated one, as the model yields
    them; call it on the model thread. A stopped ``job`` ends it before the next frame."""
    feed = FrameFeed(plan.client, plan.video.id, plan.frame_indexes)
    stream = track_stream(tracker, iter(feed), plan.label, len(plan.frame_indexes))
    try:
        for position, mask in enumerate(stream):
            if position == 0:
                continue
            yield plan.frame_indexes[position], mask
            if job is not None and job.stopped:
                logger.info("tracking stopped", extra={"uuid": job.uuid, "frames_done": position})
                return
    finally:
        stream.close()


def figures_of(plan: Plan, mask: np.ndarray) -> list[tuple[TrackedObject, Any]]:
    """Every object visible in ``mask`` as geometries typed like its input figure."""
    boxes = geometry.object_boxes(mask)
    shapes = []
    for label_id, obj in enumerate(plan.objects, start=1):
        if label_id in boxes:
            for shape in geometry.mask_geometries(mask, label_id, boxes[label_id], obj.kind):
                shapes.append((obj, shape))
    return shapes


def upload_figures(plan: Plan, frame_index: int, shapes: list[tuple[TrackedObject, Any]]) -> None:
    """``/track``'s results: one ``figures.bulk.add`` per frame (nothing for an empty one)."""
    if not shapes:
        return
    figures = []
    for obj, shape in shapes:
        meta: dict[str, Any] = {"frame": frame_index}
        if obj.figure_id is not None:
            meta["sourceFigureId"] = obj.figure_id
        figures.append(
            {
                "objectId": obj.object_id,
                "geometryType": shape.geometry_name(),
                "geometry": shape.to_json(),
                "meta": meta,
                "trackId": plan.track_id,
                "nnCreated": True,
                "nnUpdated": True,
            }
        )
    plan.client.add_figures(plan.video.id, figures)


def figure_info(plan: Plan, frame_index: int, item: tuple[TrackedObject, Any]) -> FigureInfo:
    """A result for ``/pop_tracking_results`` in the SDK's format (its ``FigureInfo``)."""
    obj, shape = item
    values = dict.fromkeys(FigureInfo._fields)
    values.update(
        id=uuid.uuid4().hex,
        entity_id=plan.video.id,
        object_id=obj.object_id,
        frame_index=frame_index,
        geometry_type=shape.geometry_name(),
        geometry=shape.to_json(),
        meta={"frame": frame_index, "trackId": plan.track_id},
    )
    return FigureInfo(**values)


def bitmap_row(mask: np.ndarray, objects: int) -> list[dict[str, Any] | None]:
    """``/track-api``'s answer for one frame: a bitmap per object (``None``: not visible)."""
    boxes = geometry.object_boxes(mask)
    row: list[dict[str, Any] | None] = []
    for label_id in range(1, objects + 1):
        if label_id not in boxes:
            row.append(None)
            continue
        (shape,) = geometry.mask_geometries(mask, label_id, boxes[label_id], "bitmap")
        row.append(geometry.to_json([shape])[0])
    return row


# ---------------------------------------------------------------- talking to the tool


def notify_progress(plan: Plan, job: Job, current: int, total: int) -> None:
    """Progress to the tool; learns the tool's stop button from the answer."""
    span = plan.frame_range(current)
    if plan.direct_progress:
        plan.client.direct_progress(
            plan.session_id, plan.video.id, plan.track_id, span, current, total
        )
        return
    stopped = plan.client.notify_progress(
        plan.track_id, plan.video.id, span, current, total, tracked_figures=plan.tracked
    )
    if stopped and current < total:
        logger.info("stopped from the labeling tool", extra={"uuid": job.uuid})
        job.stop()


def close_progress_if_stopped(plan: Plan, job: Job) -> None:
    """A job stopped early closes the tool's progress bar at what was done (as the SDK
    does); a platform that cannot take it is only logged."""
    done = job.current
    if not job.stopped or done >= plan.frames:
        return
    try:
        notify_progress(plan, job, done, done)
    except PlatformError as exc:
        logger.warning("could not send the final progress: %s", exc)


def report_error(plan: Plan, job: Job, exc: BaseException) -> None:
    """Log a failed job and tell the tool once; a platform that cannot even take the error
    is only logged. Request and platform errors are expected: no traceback for them."""
    if isinstance(exc, (InputError, PlatformError, NotImplementedError)):
        logger.warning("tracking job %s failed: %s", job.uuid, exc)
    else:
        logger.error("tracking job %s failed", job.uuid, exc_info=exc)
    message = user_message(exc)
    try:
        if plan.direct_progress:
            plan.client.direct_error(plan.session_id, plan.video.id, plan.track_id, message)
        else:
            plan.client.notify_error(plan.track_id, message)
    except PlatformError as again:
        logger.warning("could not report the error to the labeling tool: %s", again)
