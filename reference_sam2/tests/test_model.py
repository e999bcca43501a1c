"""Your own tests of the model (the runtime's suites check the contract and the serving).

Add tests of what your model must get right here. ``tracker`` is the app's ``Tracker`` on
the CPU with the model's test weights. ``@pytest.mark.needs_tracking`` marks tests that
need a model that tracks (strictly expected to fail while ``track`` is not implemented),
``@pytest.mark.quality`` tests that need trained weights (skipped when the model declares
``RANDOM_TEST_WEIGHTS``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sly_vos.dev import synthetic


@pytest.mark.needs_tracking
@pytest.mark.quality
def test_every_object_is_still_there_on_the_next_frame(tracker: Any) -> None:
    clip = synthetic.make_clip(num_frames=3, ids=(1, 2), seed=11)
    masks = iter(tracker.track(iter(clip.frames), clip.masks[0]))
    first, second = next(masks), next(masks)
    np.testing.assert_array_equal(first, clip.masks[0])
    assert set(np.unique(second)) == {0, 1, 2}  # objects move 1-3 px: none is lost
