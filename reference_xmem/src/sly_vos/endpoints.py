"""Every tracking endpoint's flow, top to bottom: one function per kind of request.

``/track`` and ``/track_async`` (the labeling tool): parse the context, connect to the
platform, plan (``videos.info``, the frame range, every figure drawn into one label mask; a
bad request is a JSON 4xx before any frame is downloaded), then queue a job whose body is
written out right there: frames stream from the platform through the model, each frame's
figures are uploaded (``/track``) or queued for ``/pop_tracking_results`` (``/track_async``),
progress goes to the tool per frame, a stop takes effect before the next frame, and an error
is reported to the tool once. ``/track-api`` plans the same way and answers when done;
``/track-api-files`` gets its frames with the request. ``/pop_tracking_results``,
``/stop_tracking`` and ``/clear_tracking_results`` act on a queued job.

A flow gets only what it needs of the app: the ``Engine`` (the tracker and the thread model
passes run on) and the ``JobRegistry``. Its steps live in ``labeling_tool`` (planning,
per-frame work, talking to the tool) and ``files_api`` (checks of uploaded frames).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from . import files_api
from .jobs import Job, JobRegistry
from .labeling_tool import (
    Plan,
    bitmap_row,
    close_progress_if_stopped,
    figure_info,
    figures_of,
    notify_progress,
    plan_track,
    plan_track_api,
    plan_track_async,
    report_error,
    tracked_masks,
    upload_figures,
)
from .memory import release_memory
from .model_thread import ModelThread
from .platform import PlatformClient, PlatformConfigError
from .schemas import RequestRef, TrackApiContext, TrackAsyncContext, TrackContext, parse
from .tracking import SupportsTrack, track_stream
from .validation import InputError

logger = logging.getLogger(__name__)

Row = list[dict[str, Any] | None]


@dataclass(frozen=True)
class Engine:
    """What a request needs of the app: its tracker and the one thread every model pass
    runs on (``model_thread.py``; background jobs run there too)."""

    tracker: SupportsTrack
    thread: ModelThread


# ---------------------------------------------------------------- the labeling tool


def track(engine: Engine, jobs: JobRegistry, body: dict[str, Any]) -> dict[str, Any]:
    """``/track``: check the request, then track in the background, uploading each frame's
    figures (``figures.bulk.add``) as soon as it is tracked."""
    ctx = parse(TrackContext, body.get("context"), "context")
    client = _connect(body)
    with _closed_on_error(client):
        plan = plan_track(client, ctx)
    job = Job("track", plan.frames)

    def run() -> None:
        with _finishing(plan, job):
            if job.stopped:  # stopped while it waited: nothing downloaded, nothing to say
                return
            job.start()
            for frame_index, mask in tracked_masks(engine.tracker, plan, job):
                shapes = figures_of(plan, mask)
                plan.count_tracked(shapes)
                upload_figures(plan, frame_index, shapes)
                job.advance()
                notify_progress(plan, job, job.current, plan.frames)
            close_progress_if_stopped(plan, job)

    jobs.submit(job, run)
    return _queued(job, plan, "Tracking has started.")


def track_async(engine: Engine, jobs: JobRegistry, body: dict[str, Any]) -> dict[str, Any]:
    """``/track_async``: check the request, then track in the background, queueing each
    frame's figures for the tool to pull (``/pop_tracking_results``)."""
    ctx = parse(TrackAsyncContext, body.get("context"), "context")
    client = _connect(body)
    with _closed_on_error(client):
        plan = plan_track_async(client, ctx)
    job = Job("track_async", plan.frames)

    def run() -> None:
        with _finishing(plan, job):
            if job.stopped:  # stopped while it waited: nothing downloaded, nothing to say
                return
            job.start()
            for frame_index, mask in tracked_masks(engine.tracker, plan, job):
                shapes = figures_of(plan, mask)
                plan.count_tracked(shapes)
                job.advance([(frame_index, figure_info(plan, frame_index, s)) for s in shapes])
                notify_progress(plan, job, job.current, plan.frames)
            close_progress_if_stopped(plan, job)

    jobs.submit(job, run)
    return _queued(job, plan, "Inference has started.")


def track_api(engine: Engine, body: dict[str, Any]) -> list[Row]:
    """``/track-api``: N x K geometries (frames after the annotated one x input geometries),
    ``None`` where an object is not visible; bitmaps, as the SDK answers. The request waits
    for the model thread."""
    ctx = parse(TrackApiContext, body.get("context"), "context")
    with closing(_connect(body)) as client:
        plan = plan_track_api(client, ctx)

        def rows() -> list[Row]:
            masks = tracked_masks(engine.tracker, plan, None)
            return [bitmap_row(mask, len(plan.objects)) for _, mask in masks]

        try:
            return engine.thread.run(rows)
        finally:
            release_memory()


# ---------------------------------------------------------------- frames in the request


def track_api_files(engine: Engine, files: list[BinaryIO], settings: Any) -> list:
    """``/track-api-files``: every check before the step it protects (counts and settings
    before the files, image headers before pixels), then all input geometries tracked
    jointly in one model pass."""
    try:
        files_api.check_file_count(len(files))
        request = files_api.parse_settings(settings, len(files))
        images = files_api.open_frames(files)  # headers only: limits checked, nothing decoded
        width, height = images[0].size
        label = files_api.input_label(request, height, width)
        if len(images) == 1:
            return []  # nothing after the annotated frame

        def run() -> list[np.ndarray]:
            # On the model thread, where the frames are decoded: waiting requests hold
            # no pixels. Every frame is decoded before the model runs, so a truncated
            # upload is a 400 whatever the model would have done with the ones before.
            frames = [files_api.decode_frame(image, i) for i, image in enumerate(images)]
            return list(track_stream(engine.tracker, frames, label, len(frames)))

        masks = engine.thread.run(run)
        return files_api.build_response(masks, [item.type for item in request.input_geometries])
    finally:
        release_memory()


# ---------------------------------------------------------------- a queued job


def pop_tracking_results(jobs: JobRegistry, body: dict[str, Any]) -> dict[str, Any]:
    """``/pop_tracking_results``: the job's status and the results waiting since the last
    pull (those of ``frame_range`` when given)."""
    ref = parse(RequestRef, body.get("context"), "context")
    job = jobs.get(ref.uuid)
    frame_range = tuple(ref.frame_range) if ref.frame_range else None
    results = job.pop(frame_range)  # type: ignore[arg-type]
    return {**job.status(), "pending_results": results}


def stop_tracking(jobs: JobRegistry, body: dict[str, Any]) -> dict[str, Any]:
    """``/stop_tracking``: the job stops before its next frame."""
    ref = parse(RequestRef, body.get("context"), "context")
    jobs.get(ref.uuid).stop()
    return {"message": "Inference will be stopped.", "success": True}


def clear_tracking_results(jobs: JobRegistry, body: dict[str, Any]) -> dict[str, Any]:
    """``/clear_tracking_results``: stop the job and forget it shortly."""
    ref = parse(RequestRef, body.get("context"), "context")
    jobs.forget_soon(ref.uuid)
    return {"message": "Inference results cleared.", "success": True}


# ---------------------------------------------------------------- shared steps


def _connect(body: dict[str, Any]) -> PlatformClient:
    """The platform the request names (else the environment's); a bad address is a 400."""
    try:
        return PlatformClient.from_request(body)
    except PlatformConfigError as exc:
        raise InputError(getattr(exc, "field", "server_address"), str(exc), 400) from None


@contextmanager
def _closed_on_error(client: PlatformClient) -> Iterator[None]:
    """Planning that refuses the request closes the connection; a queued job owns it (and
    closes it when it ends)."""
    try:
        yield
    except BaseException:
        client.close()
        raise


@contextmanager
def _finishing(plan: Plan, job: Job) -> Iterator[None]:
    """A job body's ending, whatever happens: an error is logged, reported to the tool once
    and kept on the job for ``/pop_tracking_results`` (a job thread has nobody to raise to);
    the job finishes, the platform connection closes, memory is released."""
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:
        error = exc
        report_error(plan, job, exc)
    finally:
        job.finish(error)
        plan.client.close()
        release_memory()


def _queued(job: Job, plan: Plan, message: str) -> dict[str, Any]:
    """The answer to a queued request: the tool refers to the job by its uuid."""
    logger.info(
        "%s request queued",
        job.kind,
        extra={"uuid": job.uuid, "frames": plan.frames, "objects": len(plan.objects)},
    )
    return {"message": message, "inference_request_uuid": job.uuid, "success": True}
