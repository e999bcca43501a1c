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
the model, and every bad request is a JSON 4xx naming the field and the rule. Each route's
flow reads top to bottom in ``endpoints.py``; this class loads the model and wires routes.
"""

from __future__ import annotations

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

from . import __version__, checkpoints, endpoints, errors, files_api, limits
from .appspec import AppSpec, check_model_module
from .device import device_from_env
from .jobs import JobRegistry
from .memory import keep_large_blocks
from .model_thread import ModelThread
from .settings import AppSettings
from .tracking import SupportsTrack, run_tracker

logger = logging.getLogger(__name__)


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
        keep_large_blocks()  # this process serves frames: reuse their big blocks (memory.py)
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
        errors.install(self._app.get_server(), self._json_routes(), files_api.ROUTE)

    # ------------------------------------------------------------ requests (flows: endpoints.py)

    @property
    def engine(self) -> endpoints.Engine:
        """All a request needs of the app: the tracker and the thread model passes run on."""
        return endpoints.Engine(self.tracker, self.model_thread)

    def track_api_files(self, files: list[BinaryIO], settings: Any) -> list:
        """``/track-api-files`` on file objects and parsed settings (its route calls this)."""
        return endpoints.track_api_files(self.engine, files, settings)

    # ------------------------------------------------------------ routes

    def _json_routes(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """Each JSON route and its flow in ``endpoints``, given the engine or the jobs (read
        at call time), never the app."""
        return {
            "/track": lambda body: endpoints.track(self.engine, self.jobs, body),
            "/track_async": lambda body: endpoints.track_async(self.engine, self.jobs, body),
            "/track-api": lambda body: endpoints.track_api(self.engine, body),
            "/pop_tracking_results": lambda body: endpoints.pop_tracking_results(self.jobs, body),
            "/stop_tracking": lambda body: endpoints.stop_tracking(self.jobs, body),
            "/clear_tracking_results": lambda body: endpoints.clear_tracking_results(
                self.jobs, body
            ),
        }

    def _register_endpoints(self) -> None:
        """Every endpoint the platform calls on a tracking app (replaces the SDK's)."""
        server = self._app.get_server()
        for path, handler in self._json_routes().items():
            server.add_api_route(path, _json_endpoint(path, handler), methods=["POST"])

        async def track_api_files(
            files: Annotated[list[UploadFile], File()], settings: Annotated[str, Form()] = "{}"
        ) -> Any:
            def work() -> Any:
                parsed = files_api.load_settings(settings)
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
