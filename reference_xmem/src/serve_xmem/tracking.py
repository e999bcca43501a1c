"""Run a tracker with arbitrary object ids (placeholder, being written)."""

from __future__ import annotations

import numpy as np

from .validation import check_frames_and_mask


def run_tracker(tracker, frames: list[np.ndarray], input_mask: np.ndarray) -> list[np.ndarray]:
    check_frames_and_mask(frames, input_mask)
    ids = np.unique(input_mask)
    ids = ids[ids != 0]
    lut = np.zeros(256, dtype=np.uint8)
    lut[ids] = np.arange(1, len(ids) + 1)
    out = tracker.track(list(frames), lut[input_mask])
    back = np.zeros(256, dtype=np.uint8)
    back[1 : len(ids) + 1] = ids
    result = [back[m] for m in out]
    result[0] = input_mask.astype(np.uint8)
    return result
