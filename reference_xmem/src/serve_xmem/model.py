"""XMem behind the app: loads an XMem checkpoint and propagates the first mask."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sly_vos.checkpoints import Checkpoint
from xmem import load_network, propagate
from xmem.recipe import write_recipe_weights
from xmem.schedule import PRECISIONS, autocast_dtype, native, warn_if_emulated

from .settings import SETTINGS

WEIGHTS_REQUIRED = True
# make_test_weights writes XMem's recipe weights: random, they run but do not track well.
RANDOM_TEST_WEIGHTS = True
WORKING_SHORT_SIDE = 480  # XMem's evaluation resolution; smaller videos stay native
TEST_WEIGHTS_NAME = "XMem.pth"
# 'auto' (fp16 autocast on CUDA, fp32 on CPU), 'fp32', 'bf16' or 'fp16'; read like the
# runtime's other SERVE_XMEM_* variables (same prefix), when the model loads.
PRECISION_ENV = f"{SETTINGS.env_prefix}_PRECISION"


def precision_from_env() -> str:
    """``SERVE_XMEM_PRECISION`` (default 'auto'); any other value refuses to load."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={value!r}: must be one of {', '.join(PRECISIONS)}")
    return value


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
        self.precision = precision_from_env()
        self.device = device
        self.network = load_network(weights_path, device=device)
        warn_if_emulated(self.precision, self._device_type())  # at start-up, not at 1st track

    def _device_type(self) -> str:
        return next(self.network.parameters()).device.type

    def track(self, frames: Iterable[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        """frames: HxWx3 uint8 RGB, read as XMem goes; label_mask: HxW uint8 ids 1..K. Yields
        each mask as soon as it is computed, at ``SERVE_XMEM_PRECISION`` ('auto': fp16
        autocast on CUDA, fp32 on CPU)."""
        return propagate(
            self.network, frames, label_mask, size=WORKING_SHORT_SIDE, precision=self.precision
        )

    def session_info(self) -> dict[str, Any]:
        """Extra ``/get_session_info`` fields: the precision asked for, what it means on
        this device, and whether the device computes it natively (emulated bf16 on a CPU
        without AVX512-BF16 / AMX is many times slower than fp32)."""
        device_type = self._device_type()
        dtype = autocast_dtype(self.precision, device_type)
        return {
            "precision": self.precision,
            "compute_dtype": "float32" if dtype is None else str(dtype).removeprefix("torch."),
            "compute_dtype_native": native(dtype, device_type),
        }


def make_test_weights(directory: Path) -> Path | None:
    """Deterministic recipe weights (no download) for offline tests; reused when present."""
    path = Path(directory) / TEST_WEIGHTS_NAME
    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".partial")
    write_recipe_weights(tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees a half-written file
    return path
