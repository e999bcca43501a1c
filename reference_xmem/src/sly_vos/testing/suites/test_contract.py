"""The app's own model against the ``model.py`` contract, in process (no server).

The module contract (``WEIGHTS_REQUIRED``, a ``Tracker`` that always constructs), the output
contract on a synthetic clip through ``tracking.track_stream`` (caller ids survive, one uint8
HxW mask per frame, frame 0 is the input), streaming (frames are read as the model goes,
closing the stream closes the model) and the tracking-quality bar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sly_vos.appspec import AppSpec
from sly_vos.dev import synthetic
from sly_vos.tracking import run_tracker, track_stream

MIN_MEAN_J = 0.6  # mean J over frames 1..N-1 of the synthetic clip
MIN_GAIN_OVER_COPY = 0.2  # over copying the first mask to every frame
MAX_READ_AHEAD = 8  # frames a model may read before yielding (batched key encoders)


@pytest.fixture(scope="module")
def clip() -> synthetic.Clip:
    return synthetic.make_clip(num_frames=6, ids=(3, 7, 12), seed=3)


def test_model_module_contract(app_spec: AppSpec, test_weights: Path | None) -> None:
    assert isinstance(app_spec.model.WEIGHTS_REQUIRED, bool)
    if app_spec.weights_required:
        assert test_weights is not None and (test_weights.is_file() or test_weights.is_dir())
    app_spec.make_tracker(test_weights, "cpu")  # constructing never raises: the app must start


@pytest.mark.needs_tracking
def test_ids_shapes_and_first_frame(tracker: Any, clip: synthetic.Clip) -> None:
    mask = clip.masks[0]
    assert set(np.unique(mask)) == {0, 3, 7, 12}
    out = run_tracker(tracker, clip.frames, mask)
    assert len(out) == len(clip.frames)
    for pred in out:
        assert pred.shape == mask.shape
        assert pred.dtype == np.uint8
        assert set(np.unique(pred)) <= {0, 3, 7, 12}
    np.testing.assert_array_equal(out[0], mask)


@pytest.mark.needs_tracking
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_integer_mask_dtypes_accepted(tracker: Any, clip: synthetic.Clip, dtype: type) -> None:
    out = run_tracker(tracker, clip.frames[:3], clip.masks[0].astype(dtype))
    assert [m.dtype for m in out] == [np.uint8] * 3
    np.testing.assert_array_equal(out[0], clip.masks[0])


@pytest.mark.needs_tracking
def test_single_frame(tracker: Any, clip: synthetic.Clip) -> None:
    out = run_tracker(tracker, clip.frames[:1], clip.masks[0])
    assert len(out) == 1
    np.testing.assert_array_equal(out[0], clip.masks[0])


@pytest.mark.needs_tracking
def test_frames_are_not_modified(tracker: Any, clip: synthetic.Clip) -> None:
    frames = [f.copy() for f in clip.frames[:3]]
    mask = clip.masks[0].copy()
    run_tracker(tracker, frames, mask)
    for before, after in zip(clip.frames[:3], frames, strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(mask, clip.masks[0])


@pytest.mark.needs_tracking
def test_model_streams_frames(tracker: Any) -> None:
    """The model reads frame t+1 only after it has yielded (about) frame t, so the labeling
    tool gets results while later frames are still being downloaded."""
    long_clip = synthetic.make_clip(num_frames=MAX_READ_AHEAD + 6, ids=(2,), seed=5)
    read: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(long_clip.frames):
            read.append(index)
            yield frame

    stream = track_stream(tracker, frames(), long_clip.masks[0], len(long_clip.frames))
    next(stream)
    next(stream)
    assert len(read) <= 2 + MAX_READ_AHEAD, f"read {len(read)} frames before the second mask"
    stream.close()
    assert len(read) < len(long_clip.frames)


@pytest.mark.needs_tracking
@pytest.mark.quality
def test_tracking_quality_on_synthetic_clip(tracker: Any) -> None:
    long_clip = synthetic.make_clip(num_frames=20, ids=(3, 7), seed=0)
    preds = run_tracker(tracker, long_clip.frames, long_clip.masks[0])
    quality = synthetic.mean_j(preds, long_clip.masks, long_clip.ids)
    baseline = synthetic.mean_j(
        [long_clip.masks[0]] * len(long_clip.masks), long_clip.masks, long_clip.ids
    )
    assert quality >= MIN_MEAN_J, f"mean J {quality:.3f} (copy-first-mask {baseline:.3f})"
    assert quality >= baseline + MIN_GAIN_OVER_COPY, f"mean J {quality:.3f} vs {baseline:.3f}"
