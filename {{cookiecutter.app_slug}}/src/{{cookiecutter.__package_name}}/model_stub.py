"""Your model goes here: the stub starter.

The app starts and answers ``/is_ready`` with this file as it is, but tracking answers 501
(``NotImplementedError``) until you fill in the TODOs below. The contract:

* ``WEIGHTS_REQUIRED``: set it to ``True`` when ``Tracker`` needs a weights file. The runtime
  then finds or downloads it (the model dir, ``$<PREFIX>_WEIGHTS``, then the weights URL of
  ``settings.py``, checksum verified) and passes its path as ``weights_path``.
* ``CHECKPOINTS`` (optional): several named weights to choose from (sizes, variants), each a
  ``sly_vos.checkpoints.Checkpoint`` (file names, URLs or a Hub repository + revision,
  sha256 where known, one ``default=True``). ``$<PREFIX>_CHECKPOINT`` picks one; the runtime
  fetches it and passes the file, or the folder for a checkpoint of several files, as
  ``weights_path`` (README, "Several checkpoints").
* ``Tracker(weights_path, device)``: load the network once; ``device`` is ``"cpu"`` or
  ``"cuda[:N]"`` (already checked: CUDA only when it is usable).
* ``Tracker.track(frames, label_mask)``: ``frames`` is an *iterator* of HxWx3 uint8 RGB arrays,
  the annotated frame first; read it once, in order (the runtime downloads each frame only
  when you ask for it). ``label_mask`` is the annotated frame's HxW uint8 map with
  consecutive ids 1..K (0 = background; the runtime maps the labeling tool's ids to these
  and back). *Yield* one HxW uint8 mask per frame, in order, starting with the annotated
  frame, ids in 0..K: each mask reaches the labeling tool as soon as you yield it, and a
  stopped request simply stops asking (write cleanup in a ``finally``). Returning a list
  also works, but then nothing is sent before the last frame.
* ``make_test_weights(directory)``: write small weights the tests can load offline (random
  init is fine) and return their path; ``None`` when ``WEIGHTS_REQUIRED`` is False. Set
  ``RANDOM_TEST_WEIGHTS = True`` when those weights are random: the tracking-quality tests
  are then skipped with that reason, everything else still runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
        #   self.net.load_state_dict(sly_vos.weights.load_checkpoint(weights_path))
        # Must not raise for the stub: the app has to start and serve /is_ready.
        self.weights_path = weights_path
        self.device = device

    def track(self, frames: Iterable[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        """Yield one HxW uint8 mask per frame (the first for the annotated frame), ids 0..K."""
        # TODO: encode the first frame with label_mask, then for each next frame yield its mask:
        #   frames = iter(frames); state = self.net.start(next(frames), label_mask)
        #   yield label_mask
        #   for frame in frames:
        #       yield self.net.step(state, frame)
        package = __name__.rpartition(".")[0] or "<package>"
        raise NotImplementedError(NOT_IMPLEMENTED.format(package=package))


def make_test_weights(directory: Path) -> Path | None:
    """Small weights for offline tests; ``None`` while ``WEIGHTS_REQUIRED`` is False."""
    # TODO: when WEIGHTS_REQUIRED is True, save a randomly initialised network to
    # ``directory / SETTINGS.weights_filename`` and return that path.
    return None
