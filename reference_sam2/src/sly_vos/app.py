"""``TrackingApp``: the SDK's ``MaskTracking`` with every tracking endpoint owned here.

An app subclasses it with two class attributes, its ``settings`` and its ``model`` module;
everything else (device, weights, request checks, limits, id mapping, the labeling tool's
protocol) lives here, once for every app.

Why the SDK's endpoints are replaced rather than extended (supervisely 6.74.51): its
``/track_async`` never delivers results, backward ``/track`` writes to the wrong frames,
``/track-api`` blocks the event loop and answers 200 ``null`` to errors, malformed bodies get
500s, limits and geometry checks run only after every frame is downloaded, stop takes effect
only after the whole model pass, and each geometry of ``/track-api-files`` costs one model
pass. Here: one model pass tracks all objects of a request jointly, frames stream through
the model, and every bad request is a JSON 4xx naming the field and the rule.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, BinaryIO, ClassVar, Literal

import numpy as np
import supervisely as sly
from fastapi import File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import __version__, checkpoints, errors, files_api, labeling_tool, limits
from .appspec import AppSpec, check_model_module
from .device import device_from_env
from .jobs import Job, JobRegistry
from .memory import release_memory
from .model_thread import ModelThread
from .platform import PlatformClient, PlatformConfigError
from .schemas import RequestRef, TrackApiContext, TrackAsyncContext, TrackContext, parse
from .settings import AppSettings
from .tracking import SupportsTrack, run_tracker, track_stream
from .validation import InputError

logger = logging.getLogger(__name__)

JSON_ROUTES = (
    "/track",
    "/track_async",
    "/track-api",
    "/pop_tracking_results",
    "/stop_tracking",
    "/clear_tracking_results",
)


class TrackingApp(sly.nn.inference.MaskTracking):
    """A Supervisely mask-tracking app around ``model.Tracker``.

    Subclasses set ``settings`` (an ``AppSettings``) and ``model`` (the module with
    ``WEIGHTS_REQUIRED`` and ``Tracker``); see the app template's ``app.py``.
    """

    settings: ClassVar[AppSettings]
    model: ClassVar[ModuleType]

    tracker: SupportsTrack
    device: str
    model_thread: ModelThread
    jobs: JobRegistry

    def __init__(self, model_dir: str | None = None, **kwargs: Any) -> None:
        if not isinstance(getattr(type(self), "settings", None), AppSettings):
            raise TypeError(f"{type(self).__name__}.settings must be an AppSettings")
        check_model_module(type(self).model)
        self.checkpoint = _checkpoint_or_exit(self.spec)
        if model_dir is None:
            model_dir = str(self.settings.default_model_dir())
        super().__init__(model_dir=model_dir, **kwargs)

    @property
    def spec(self) -> AppSpec:
        return AppSpec(self.settings, self.model)

    # ------------------------------------------------------------ the SDK's contract

    def load_on_device(
        self,
        model_dir: str,
        device: Literal["cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3"] = "cpu",
    ) -> None:
        """Choose the device (CUDA only when usable), find the weights, build the Tracker."""
        from .weights import resolve_weights  # the weights module needs no SDK; keep it lazy

        self.device = device_from_env(device, self.settings.device_env)
        weights = None
        if self.checkpoint is not None:
            weights = checkpoints.resolve(self.settings, self.checkpoint, Path(model_dir))
        elif self.spec.weights_required:
            weights = resolve_weights(self.settings, model_dir)
        self.tracker = self.spec.make_tracker(weights, self.device)
        # Every model pass runs on one thread, one at a time (see model_thread.py); frames
        # are decoded or downloaded there, so waiting requests hold none.
        self.model_thread = ModelThread()
        self.jobs = JobRegistry(self.model_thread)
        sly.logger.info(
            "Model loaded",
            extra={
                "model": self.settings.model_name,
                "device": self.device,
                "weights": str(weights),
                "checkpoint": self.checkpoint.name if self.checkpoint else None,
            },
        )

    def predict(self, frames: list[np.ndarray], input_mask: np.ndarray) -> list[np.ndarray]:
        """The SDK's list contract: one mask per frame, ``[0]`` the input mask."""
        return self.model_thread.run(run_tracker, self.tracker, frames, input_mask)

    def get_info(self) -> dict[str, Any]:
        info = super().get_info()
        info.update(
            app_version=self.settings.app_version,
            model_name=self.settings.model_name,
            runtime_version=__version__,
            device=getattr(self, "device", None),
            checkpoint=_checkpoint_info(getattr(self, "checkpoint", None)),
            limits={
                "max_frames": limits.MAX_FRAMES,
                "max_frame_pixels": limits.MAX_FRAME_PIXELS,
                "max_frame_side": limits.MAX_FRAME_SIDE,
                "max_total_pixels": limits.MAX_TOTAL_PIXELS,
                "max_objects": limits.MAX_OBJECTS,
            },
        )
        # A model may report its own settings (e.g. precision): ``Tracker.session_info()``
        # returns a dict of extra fields; the runtime's own fields are never overwritten.
        extra = getattr(getattr(self, "tracker", None), "session_info", None)
        if callable(extra):
            info.update({k: v for k, v in dict(extra()).items() if k not in info})
        return info

    def serve(self) -> None:
        super().serve()  # BaseTracking.serve registers our endpoints (_register_endpoints)
        errors.install(self._app.get_server(), JSON_ROUTES, files_api.ROUTE)

    # ------------------------------------------------------------ requests

    def start_track(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/track``: check, then upload results in the background."""
        ctx = parse(TrackContext, body.get("context"), "context")
        plan = _plan(labeling_tool.plan_track, body, ctx)
        return self._submit("track", plan, labeling_tool.run_track, "Tracking has started.")

    def start_track_async(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/track_async``: check, then queue results for ``/pop_tracking_results``."""
        ctx = parse(TrackAsyncContext, body.get("context"), "context")
        plan = _plan(labeling_tool.plan_track_async, body, ctx)
        return self._submit(
            "track_async", plan, labeling_tool.run_track_async, "Inference has started."
        )

    def _submit(
        self,
        kind: str,
        plan: labeling_tool.Plan,
        run: Callable[[labeling_tool.TrackingHost, labeling_tool.Plan, Job], None],
        message: str,
    ) -> dict[str, Any]:
        job = Job(kind, plan.frames)
        self.jobs.submit(job, lambda j: run(self, plan, j))
        logger.info(
            "%s request queued",
            kind,
            extra={"uuid": job.uuid, "frames": plan.frames, "objects": len(plan.objects)},
        )
        return {"message": message, "inference_request_uuid": job.uuid, "success": True}

    def track_api_sync(self, body: dict[str, Any]) -> list[list[dict[str, Any] | None]]:
        """``/track-api``: N x K geometries, computed in a worker thread."""
        ctx = parse(TrackApiContext, body.get("context"), "context")
        plan = _plan(labeling_tool.plan_track_api, body, ctx)
        return labeling_tool.run_track_api(self, plan)

    def pop_results(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = parse(RequestRef, body.get("context"), "context")
        job = self.jobs.get(ref.uuid)
        frame_range = tuple(ref.frame_range) if ref.frame_range else None
        results = job.pop(frame_range)  # type: ignore[arg-type]
        return {**job.status(), "pending_results": results}

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = parse(RequestRef, body.get("context"), "context")
        self.jobs.get(ref.uuid).stop()
        return {"message": "Inference will be stopped.", "success": True}

    def clear(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = parse(RequestRef, body.get("context"), "context")
        self.jobs.forget_soon(ref.uuid)
        return {"message": "Inference results cleared.", "success": True}

    def track_api_files(self, files: list[BinaryIO], settings: Any) -> list:
        """``/track-api-files``: all input geometries tracked jointly in one model pass."""
        try:
            files_api.check_file_count(len(files))
            request = files_api.parse_settings(settings, len(files))
            images = files_api.open_frames(files)  # headers only: limits checked, nothing decoded
            width, height = images[0].size
            label = files_api.input_label(request, height, width)
            kinds = [item.type for item in request.input_geometries]
            if len(images) == 1:
                return []  # nothing after the annotated frame

            def track() -> list[np.ndarray]:
                # On the model thread, where the frames are decoded: waiting requests hold
                # no pixels. Every frame is decoded before the model runs, so a truncated
                # upload is a 400 whatever the model would have done with the ones before.
                frames = [files_api.decode_frame(image, i) for i, image in enumerate(images)]
                return list(track_stream(self.tracker, frames, label, len(frames)))

            masks = self.model_thread.run(track)
            return files_api.build_response(masks, kinds)
        finally:
            release_memory()

    # ------------------------------------------------------------ routes

    def _register_endpoints(self) -> None:
        """Every endpoint the platform calls on a tracking app (replaces the SDK's)."""
        server = self._app.get_server()
        json_routes: dict[str, Callable[[dict[str, Any]], Any]] = {
            "/track": self.start_track,
            "/track_async": self.start_track_async,
            "/track-api": self.track_api_sync,
            "/pop_tracking_results": self.pop_results,
            "/stop_tracking": self.stop,
            "/clear_tracking_results": self.clear,
        }
        for path, handler in json_routes.items():
            server.add_api_route(path, _json_endpoint(path, handler), methods=["POST"])

        async def track_api_files(
            files: Annotated[list[UploadFile], File()], settings: Annotated[str, Form()] = "{}"
        ) -> Any:
            def work() -> Any:
                try:
                    parsed = json.loads(settings)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        "settings", f"is not valid JSON ({exc.msg} at char {exc.pos})", 400
                    ) from None
                return self.track_api_files([f.file for f in files], parsed)

            return await _answer(files_api.ROUTE, work)

        server.add_api_route(files_api.ROUTE, track_api_files, methods=["POST"])


def _checkpoint_or_exit(spec: AppSpec) -> checkpoints.Checkpoint | None:
    """The checkpoint ``$<PREFIX>_CHECKPOINT`` names (or the default). A wrong name or
    declaration stops the app here, at start, with one line (no traceback)."""
    try:
        return checkpoints.select(spec.settings, checkpoints.declared(spec.model))
    except checkpoints.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _checkpoint_info(checkpoint: checkpoints.Checkpoint | None) -> dict[str, Any] | None:
    """What ``/get_session_info`` says about the checkpoint in use."""
    if checkpoint is None:
        return None
    return {"name": checkpoint.name, "source": checkpoint.source, "files": list(checkpoint.files)}


def _client(body: dict[str, Any]) -> PlatformClient:
    try:
        return PlatformClient.from_request(body)
    except PlatformConfigError as exc:
        raise InputError(getattr(exc, "field", "server_address"), str(exc), 400) from None


def _plan(
    planner: Callable[[PlatformClient, Any], labeling_tool.Plan], body: dict[str, Any], ctx: Any
) -> labeling_tool.Plan:
    """The request's plan; its platform connection is closed when planning refuses it (a
    plan that runs closes it when its job ends)."""
    client = _client(body)
    try:
        return planner(client, ctx)
    except BaseException:
        client.close()
        raise


def _json_endpoint(
    path: str, handler: Callable[[dict[str, Any]], Any]
) -> Callable[[Request], Awaitable[Any]]:
    """An ``async`` route that parses the body and runs ``handler`` in a worker thread, so
    platform calls and model passes never block the event loop (``/is_ready`` answers)."""

    async def endpoint(request: Request) -> Any:
        body = await request.json()  # JsonBodyGuard has checked it is a JSON object
        return await _answer(path, lambda: handler(body))

    endpoint.__name__ = "route_" + path.strip("/").replace("-", "_")
    return endpoint


async def _answer(path: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` off the event loop; errors become JSON answers (logged, without the
    request's frames kept alive by a traceback)."""
    failure: Any = None
    try:
        return await run_in_threadpool(work)
    except Exception as exc:
        http = errors.to_http_exception(exc)
        if http.status_code >= 500:
            logger.error("%s failed: %s", path, exc, exc_info=http.status_code == 500)
        else:
            logger.info("%s refused: %s", path, http.detail)
        failure = JSONResponse(
            status_code=http.status_code, content={"detail": http.detail, "success": False}
        )
    return failure
