"""The Supervisely serving class: ``MaskTracking`` around the model in ``model.py``.

Only glue lives here (device, weights, request checks); the model is in ``model.py``, the id
handling in ``tracking.py`` and the ``/track-api-files`` checks in ``http_api.py``, so each
can be tested without a server.
"""

from __future__ import annotations

import threading
from typing import Any, BinaryIO, Literal

import numpy as np
import supervisely as sly
from fastapi import HTTPException

from . import http_api, limits, model, settings
from .device import device_from_env
from .tracking import run_tracker
from .weights import resolve_weights


class {{ cookiecutter.__class_name }}(sly.nn.inference.MaskTracking):
    """The model of this app (``settings.MODEL_NAME``) served as a Supervisely mask tracker.

    ``/track-api-files`` deviates from the SDK on purpose: the SDK calls ``predict`` once per
    input geometry, each alone as id 1; this class draws all geometries, in order, into one
    label mask (ids 1..n, later ones on top) and calls ``predict`` once. Joint tracking is
    what VOS models are built for (objects compete for pixels, occlusions resolve) and costs
    one model pass instead of n. The answer keeps the SDK's format. Every request is checked
    first (``http_api``) and refused with a JSON 4xx naming the field and the rule.
    """

    tracker: model.Tracker
    device: str

    def load_on_device(
        self,
        model_dir: str,
        device: Literal["cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3"] = "cpu",
    ) -> None:
        self.device = device_from_env(device, settings.DEVICE_ENV)
        weights = resolve_weights(model_dir) if model.WEIGHTS_REQUIRED else None
        self.tracker = model.Tracker(weights, self.device)
        # One tracking job at a time: bounded memory, no contention on 2 cores. The request
        # lock also covers decoding, so waiting requests hold no decoded frames.
        self._predict_lock = threading.Lock()
        self._request_lock = threading.Lock()
        sly.logger.info(
            "Model loaded",
            extra={"model": settings.MODEL_NAME, "device": self.device, "weights": str(weights)},
        )

    def predict(self, frames: list[np.ndarray], input_mask: np.ndarray) -> list[np.ndarray]:
        with self._predict_lock:
            return run_tracker(self.tracker, frames, input_mask)

    def track_api_files(self, files: list[BinaryIO], settings: dict[str, Any]) -> list:
        """Track all input geometries jointly through the uploaded frames (see class doc)."""
        error: HTTPException | None = None
        try:
            return self._track_files(files, settings)
        except Exception as exc:
            error = http_api.to_http_exception(exc)
            if error.status_code == 500:
                sly.logger.exception("/track-api-files failed: %s", exc)
            else:
                sly.logger.info("/track-api-files refused: %s", error.detail)
        finally:
            http_api.release_memory()
        # Raised outside the except block: no traceback keeps the request's frames alive.
        raise error

    def _track_files(self, files: list[BinaryIO], request_settings: Any) -> list:
        http_api.check_file_count(len(files))
        request = http_api.parse_settings(request_settings, len(files))
        images = http_api.open_frames(files)  # headers only: limits checked, nothing decoded
        width, height = images[0].size
        with self._request_lock:
            label, kinds = http_api.draw_geometries(request.geometries, height, width)
            frames = [http_api.decode_frame(image, i) for i, image in enumerate(images)]
            if len(frames) == 1:
                return []  # nothing after the annotated frame
            masks = self.predict(frames=frames, input_mask=label)
            del frames
            return http_api.build_response(masks, kinds)

    def serve(self) -> None:
        super().serve()
        http_api.install_error_handlers(self.app.get_server())

    def get_info(self) -> dict:
        info = super().get_info()
        info["app_version"] = settings.APP_VERSION
        info["model_name"] = settings.MODEL_NAME
        info["device"] = getattr(self, "device", None)
        info["limits"] = {
            "max_frames": limits.MAX_FRAMES,
            "max_frame_pixels": limits.MAX_FRAME_PIXELS,
            "max_total_pixels": limits.MAX_TOTAL_PIXELS,
            "max_objects": limits.MAX_OBJECTS,
        }
        return info
