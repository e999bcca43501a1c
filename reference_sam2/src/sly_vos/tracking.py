"""Run an app's ``Tracker`` on a request with arbitrary object ids, one frame at a time.

Models see consecutive ids 1..K (the ``model.py`` contract); callers use any ids in 1..255
(Supervisely object indices, with gaps). This module checks the request, compacts the ids,
feeds the model an iterator of frames, checks every mask it yields and restores the
caller's ids. Streaming is the point: the labeling-tool endpoints download frame t+1 only
when the model asks for it, send each result as soon as it exists and can stop between two
frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from .validation import InputError, check_frame, check_frames, check_mask


class TrackerOutputError(Exception):
    """The model yielded something that breaks the ``Tracker.track`` contract.

    Not a ``RuntimeError`` on purpose: the SDK treats those as device failures.
    """


class SupportsTrack(Protocol):
    """The model contract: ``track`` reads frames in order and yields one mask per frame.

    Optional: ``session_info() -> dict``, extra fields for ``/get_session_info`` (settings
    the model read from the environment, say).
    """

    def track(
        self, frames: Iterator[np.ndarray], label_mask: np.ndarray
    ) -> Iterable[np.ndarray]: ...


def compact_ids(input_mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map the sorted ids to 1..K (background stays 0); returns a uint8 label map."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint8)
    return lut[input_mask]


def check_output_mask(mask: object, index: int, size: tuple[int, int], num_ids: int) -> None:
    """Refuse a mask that is not an HxW integer array with ids in 0..num_ids."""
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


def _checked_frames(
    frames: Iterable[np.ndarray], size: tuple[int, int], count: int
) -> Iterator[np.ndarray]:
    """The frames, each checked as it is read; at most ``count`` of them."""
    index = -1
    for index, frame in enumerate(frames):
        if index >= count:
            raise InputError("frames", f"more frames than the {count} announced")
        check_frame(frame, index, size)
        yield frame
    if index + 1 < count:
        raise InputError("frames", f"{index + 1} frames arrived, {count} were announced")


def track_stream(
    tracker: SupportsTrack, frames: Iterable[np.ndarray], input_mask: np.ndarray, count: int
) -> Iterator[np.ndarray]:
    """Yield one HxW uint8 mask per frame, caller's ids, ``[0]`` the input mask itself.

    ``frames`` (``count`` of them, the first annotated) is read lazily, only as fast as the
    model asks. Closing this iterator closes the model's, so a stopped request frees the
    model's state at once. Raises ``InputError`` for a bad request and
    ``TrackerOutputError`` for a model that breaks the contract.
    """
    ids = check_mask(input_mask, None)
    size = (int(input_mask.shape[0]), int(input_mask.shape[1]))
    restore = np.zeros(256, dtype=np.uint8)
    restore[1 : ids.size + 1] = ids
    output = tracker.track(_checked_frames(frames, size, count), compact_ids(input_mask, ids))
    if isinstance(output, (str, bytes, np.ndarray)) or not isinstance(output, Iterable):
        kind = type(output).__name__
        raise TrackerOutputError(f"track() must yield masks (or return a list), got {kind}")
    produced = 0
    try:
        for mask in output:
            if produced >= count:
                raise TrackerOutputError(f"track() yielded more masks than the {count} frames")
            check_output_mask(mask, produced, size, int(ids.size))
            yield input_mask.astype(np.uint8) if produced == 0 else restore[mask]
            produced += 1
    finally:
        close = getattr(output, "close", None)
        if close is not None:
            close()
    if produced != count:
        raise TrackerOutputError(f"track() returned {produced} masks for {count} frames")


def run_tracker(
    tracker: SupportsTrack, frames: Sequence[np.ndarray], input_mask: np.ndarray
) -> list[np.ndarray]:
    """``track_stream`` over a list of frames (checked, limits included), as a list.

    This is the SDK's ``predict`` contract: one mask per frame, ``[0]`` the input mask.
    """
    size = check_frames(frames)
    check_mask(input_mask, size)
    return list(track_stream(tracker, frames, input_mask, len(frames)))
