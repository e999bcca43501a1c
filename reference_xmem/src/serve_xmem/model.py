"""XMem behind the app: loads an XMem checkpoint and propagates the first mask."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from sly_vos.checkpoints import Checkpoint
from xmem import load_network, propagate
from xmem.recipe import write_recipe_weights

WEIGHTS_REQUIRED = True
# make_test_weights writes XMem's recipe weights: random, they run but do not track well.
RANDOM_TEST_WEIGHTS = True
WORKING_SHORT_SIDE = 480  # XMem's evaluation resolution; smaller videos stay native
TEST_WEIGHTS_NAME = "XMem.pth"
RELEASE = "https://github.com/hkchengrex/XMem/releases/download/v1.0/"
# XMem's v1.0 release; $SERVE_XMEM_CHECKPOINT picks one (no sha256 is published).
CHECKPOINTS = (
    Checkpoint(
        "XMem",
        ("XMem.pth",),
        urls=(RELEASE + "XMem.pth",),
        default=True,
        note="the release's default model",
    ),
    Checkpoint(
        "XMem-s012",
        ("XMem-s012.pth",),
        urls=(RELEASE + "XMem-s012.pth",),
        note="the s012 variant (with the BL30K training stage, see XMem's README)",
    ),
)


class Tracker:
    """One loaded network; each `track` call starts with empty memory (like the original app)."""

    def __init__(self, weights_path: Path | None, device: str) -> None:
        if weights_path is None:
            raise ValueError("XMem needs a weights file (XMem.pth); got none")
        self.device = device
        self.network = load_network(weights_path, device=device)

    def track(self, frames: Iterable[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        """frames: HxWx3 uint8 RGB, read as XMem goes; label_mask: HxW uint8 ids 1..K. Yields
        each mask as soon as it is computed. fp16 autocast is used only on CUDA (the
        default of ``propagate``); CPU stays fp32."""
        return propagate(self.network, frames, label_mask, size=WORKING_SHORT_SIDE)


def make_test_weights(directory: Path) -> Path | None:
    """Deterministic recipe weights (no download) for offline tests; reused when present."""
    path = Path(directory) / TEST_WEIGHTS_NAME
    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".partial")
    write_recipe_weights(tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees a half-written file
    return path
