"""Input checks shared by ``tracking.run_tracker`` and the HTTP layer.

Every refusal is an ``InputError`` naming the offending field (``frames[3]``,
``input_mask``) and the rule, with the HTTP status the app should answer: 400 malformed,
413 over a limit (``limits.py``), 422 inconsistent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import limits


class InputError(ValueError):
    """A request the app refuses; ``field`` names the input, ``status`` the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def check_count(count: int, field: str = "frames") -> None:
    """Refuse a request of more frames than ``limits.MAX_FRAMES`` (before any is read)."""
    if count > limits.MAX_FRAMES:
        raise InputError(
            field, f"{count} frames exceed the limit MAX_FRAMES={limits.MAX_FRAMES}", 413
        )


def check_frame_size(height: int, width: int, field: str) -> None:
    """Refuse a frame over ``MAX_FRAME_SIDE`` on a side or ``MAX_FRAME_PIXELS`` in all."""
    if max(height, width) > limits.MAX_FRAME_SIDE:
        raise InputError(
            field,
            f"{height}x{width} has a side over the limit MAX_FRAME_SIDE={limits.MAX_FRAME_SIDE}",
            413,
        )
    if height * width > limits.MAX_FRAME_PIXELS:
        raise InputError(
            field,
            f"{height}x{width} = {height * width} pixels exceed the limit "
            f"MAX_FRAME_PIXELS={limits.MAX_FRAME_PIXELS}",
            413,
        )


def check_size(
    height: int, width: int, count: int, frame_field: str = "frames[0]", field: str = "frames"
) -> None:
    """Refuse frames over the frame limits or a request over ``MAX_TOTAL_PIXELS``."""
    check_frame_size(height, width, frame_field)
    total = height * width * count
    if total > limits.MAX_TOTAL_PIXELS:
        raise InputError(
            field,
            f"{count} frames of {height}x{width} = {total} pixels exceed the limit "
            f"MAX_TOTAL_PIXELS={limits.MAX_TOTAL_PIXELS}",
            413,
        )


def check_frame(frame: object, index: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """Check one HxWx3 uint8 RGB frame (of ``size`` when given); return its (H, W)."""
    field = f"frames[{index}]"
    if not isinstance(frame, np.ndarray):
        raise InputError(field, f"must be a numpy array, got {type(frame).__name__}", 400)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(field, f"must be an HxWx3 RGB image, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise InputError(field, f"must have dtype uint8, got {frame.dtype}")
    height, width = int(frame.shape[0]), int(frame.shape[1])
    if height == 0 or width == 0:
        raise InputError(field, f"must not be empty, got shape {frame.shape}")
    if size is not None and (height, width) != size:
        raise InputError(
            field, f"size {height}x{width} differs from the first frame's {size[0]}x{size[1]}"
        )
    return height, width


def check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    """Check a non-empty list of HxWx3 uint8 RGB frames of one size; return (H, W)."""
    if not isinstance(frames, (list, tuple)):
        raise InputError("frames", f"must be a list of images, got {type(frames).__name__}", 400)
    if len(frames) == 0:
        raise InputError("frames", "at least one frame is required")
    check_count(len(frames))
    size = check_frame(frames[0], 0, None)
    check_size(*size, len(frames))
    for index, frame in enumerate(frames[1:], start=1):
        check_frame(frame, index, size)
    return size


def check_mask(input_mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Check an HxW integer label map (0 = background, ids 1..255, at least one object) of
    ``size`` (when given); return its sorted non-zero ids."""
    field = "input_mask"
    if not isinstance(input_mask, np.ndarray):
        raise InputError(field, f"must be a numpy array, got {type(input_mask).__name__}", 400)
    if input_mask.ndim != 2:
        raise InputError(field, f"must be a 2-D HxW label map, got shape {input_mask.shape}")
    if size is not None and input_mask.shape != size:
        raise InputError(
            field,
            f"size {input_mask.shape[0]}x{input_mask.shape[1]} differs from the frames' size "
            f"{size[0]}x{size[1]}",
        )
    if input_mask.size == 0:
        raise InputError(field, f"must not be empty, got shape {input_mask.shape}")
    if input_mask.dtype == np.bool_ or not np.issubdtype(input_mask.dtype, np.integer):
        raise InputError(field, f"must have an integer dtype (object ids), got {input_mask.dtype}")
    low, high = int(input_mask.min()), int(input_mask.max())
    if low < 0 or high > 255:
        bad = low if low < 0 else high
        raise InputError(field, f"object ids must be in 0..255, found {bad}")
    ids = np.unique(input_mask)
    ids = ids[ids != 0]
    if ids.size == 0:
        raise InputError(field, "no object to track (every pixel is 0, the background)")
    if ids.size > limits.MAX_OBJECTS:
        raise InputError(
            field, f"{ids.size} objects exceed the limit MAX_OBJECTS={limits.MAX_OBJECTS}", 413
        )
    return ids.astype(np.uint8)
