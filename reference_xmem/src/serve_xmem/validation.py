"""Input checks shared by ``predict`` and the HTTP layer (placeholder, being written)."""

from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """A request the app refuses; ``field`` names the input, ``status`` the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def check_frames_and_mask(frames: list[np.ndarray], input_mask: np.ndarray) -> None:
    if len(frames) == 0:
        raise InputError("frames", "at least one frame is required")
