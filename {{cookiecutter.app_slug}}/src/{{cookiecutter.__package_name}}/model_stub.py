"""Your model goes here: the stub starter.

The app starts and answers ``/is_ready`` with this file as it is, but tracking raises
``NotImplementedError`` until you fill in the three TODOs below. The contract (also in
``docs/ARCHITECTURE.md`` of the template):

* ``WEIGHTS_REQUIRED``: set it to ``True`` when ``Tracker`` needs a weights file. The app then
  finds or downloads it (``weights.resolve_weights``: the model dir, ``<PKG>_WEIGHTS``, then
  the weights URL of ``settings.py``) and passes its path as ``weights_path``.
* ``Tracker(weights_path, device)``: load the network once; ``device`` is ``"cpu"`` or
  ``"cuda[:N]"`` (already checked by ``device.choose_device``).
* ``Tracker.track(frames, label_mask)``: ``frames`` are validated HxWx3 uint8 RGB arrays,
  ``label_mask`` is an HxW uint8 map of frame 0 with consecutive ids 1..K (0 = background;
  ``tracking.run_tracker`` compacts and restores the caller's ids). Return one HxW uint8 mask
  per frame, index 0 being the annotated frame, ids in 0..K.
* ``make_test_weights(directory)``: write small weights the tests can load offline (random
  init is fine) and return their path; ``None`` when ``WEIGHTS_REQUIRED`` is False.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# TODO: True once Tracker loads a weights file (then make_test_weights must return one).
# False keeps the app startable without any weights while you work on the model.
WEIGHTS_REQUIRED = False

NOT_IMPLEMENTED = (
    "the stub starter model does not track yet: implement Tracker.track in "
    "src/{package}/model.py (see the docstring at the top of that file)"
)


class Tracker:
    """Placeholder tracker: constructs fine so the app can start, tracking is not implemented."""

    def __init__(self, weights_path: Path | None, device: str) -> None:
        # TODO: build the network and load ``weights_path`` here, e.g.
        #   self.net = MyNet().to(device).eval()
        #   self.net.load_state_dict(weights.load_checkpoint(weights_path))
        # Must not raise for the stub: the app has to start and serve /is_ready.
        self.weights_path = weights_path
        self.device = device

    def track(self, frames: list[np.ndarray], label_mask: np.ndarray) -> list[np.ndarray]:
        """Return one HxW uint8 mask per frame (index 0 = the annotated frame), ids 0..K."""
        # TODO: run the model: encode frames[0] with label_mask, propagate to frames[1:].
        package = __name__.rpartition(".")[0] or "<package>"
        raise NotImplementedError(NOT_IMPLEMENTED.format(package=package))


def make_test_weights(directory: Path) -> Path | None:
    """Small weights for offline tests; ``None`` while ``WEIGHTS_REQUIRED`` is False."""
    # TODO: when WEIGHTS_REQUIRED is True, save a randomly initialised network to
    # ``directory / settings.WEIGHTS_FILENAME`` and return that path.
    return None
