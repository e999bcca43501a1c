"""The Supervisely serving class: ``MaskTracking`` around the model in ``model.py``.

Only glue lives here (device, weights, request checks); the model is in ``model.py`` and
the id handling in ``tracking.py`` so both can be tested without a server.
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np
import supervisely as sly

from . import model, settings
from .device import device_from_env
from .tracking import run_tracker
from .weights import resolve_weights


class XMemTracker(sly.nn.inference.MaskTracking):
    """The model of this app (``settings.MODEL_NAME``) served as a Supervisely mask tracker."""

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
        # One tracking job at a time: bounded memory, no contention on 2 cores.
        self._predict_lock = threading.Lock()
        sly.logger.info(
            "Model loaded",
            extra={"model": settings.MODEL_NAME, "device": self.device, "weights": str(weights)},
        )

    def predict(self, frames: list[np.ndarray], input_mask: np.ndarray) -> list[np.ndarray]:
        with self._predict_lock:
            return run_tracker(self.tracker, frames, input_mask)

    def get_info(self) -> dict:
        info = super().get_info()
        info["app_version"] = settings.APP_VERSION
        info["model_name"] = settings.MODEL_NAME
        info["device"] = getattr(self, "device", None)
        return info
