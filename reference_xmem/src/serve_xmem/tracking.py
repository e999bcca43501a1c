"""Run a tracker on a request with arbitrary object ids.

Models see consecutive ids 1..K (``model.py`` contract); callers use any ids in 1..255
(Supervisely object indices). This module validates the request, compacts the ids, calls the
model, checks what it returned and restores the caller's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .validation import check_frames_and_mask


class TrackerOutputError(Exception):
    """The model returned something that breaks the ``Tracker.track`` contract.

    Not a ``RuntimeError`` on purpose: the SDK treats those as device failures.
    """


class SupportsTrack(Protocol):
    def track(self, frames: list[np.ndarray], label_mask: np.ndarray) -> list[np.ndarray]: ...


def compact_ids(input_mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map the sorted ids to 1..K (background stays 0); returns a uint8 label map."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint8)
    return lut[input_mask]


def check_output(output: object, count: int, size: tuple[int, int], num_ids: int) -> None:
    """Refuse output that is not ``count`` HxW integer masks with ids in 0..num_ids."""
    if not isinstance(output, Sequence) or isinstance(output, (str, bytes)):
        kind = type(output).__name__
        raise TrackerOutputError(f"track() must return a list of masks, got {kind}")
    if len(output) != count:
        raise TrackerOutputError(f"track() returned {len(output)} masks for {count} frames")
    for index, mask in enumerate(output):
        where = f"track() mask {index}"
        if not isinstance(mask, np.ndarray):
            raise TrackerOutputError(f"{where} is a {type(mask).__name__}, not a numpy array")
        if mask.shape != size:
            raise TrackerOutputError(f"{where} has shape {mask.shape}, expected {size}")
        if mask.dtype == np.bool_ or not np.issubdtype(mask.dtype, np.integer):
            raise TrackerOutputError(f"{where} has dtype {mask.dtype}, expected uint8")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) > num_ids):
            raise TrackerOutputError(
                f"{where} has ids {int(mask.min())}..{int(mask.max())}, expected 0..{num_ids}"
            )


def run_tracker(
    tracker: SupportsTrack, frames: Sequence[np.ndarray], input_mask: np.ndarray
) -> list[np.ndarray]:
    """Track the objects of ``input_mask`` (on ``frames[0]``) through ``frames``.

    Returns one HxW uint8 mask per frame with the caller's ids; ``[0]`` equals the input.
    Raises ``validation.InputError`` for a bad request, ``TrackerOutputError`` for a bad model.
    """
    ids = check_frames_and_mask(frames, input_mask)
    size = (int(input_mask.shape[0]), int(input_mask.shape[1]))
    output = tracker.track(list(frames), compact_ids(input_mask, ids))
    check_output(output, len(frames), size, int(ids.size))
    restore = np.zeros(256, dtype=np.uint8)
    restore[1 : ids.size + 1] = ids
    result = [restore[mask] for mask in output]
    result[0] = input_mask.astype(np.uint8)
    return result
