"""Pick the torch device the model runs on.

The SDK asks for ``"cuda"`` first and falls back to CPU only on ``RuntimeError``; a CPU-only
torch raises something else, so the app decides here and never crashes on a CPU machine.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def choose_device(requested: str = "cuda", override: str | None = None) -> str:
    """Return ``requested`` when it is usable, else ``"cpu"`` (with a log line).

    ``override`` (the app's ``<PKG>_DEVICE`` variable) wins when set.
    """
    wanted = (override or requested or "cpu").strip().lower()
    if not wanted.startswith("cuda"):
        return "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return wanted
    except Exception as exc:  # a broken CUDA install must not stop a CPU session
        logger.warning("CUDA check failed (%s); running on CPU", exc)
        return "cpu"
    logger.warning("CUDA is not available; running on CPU")
    return "cpu"


def device_from_env(requested: str, env_name: str) -> str:
    """``choose_device`` with the override read from ``env_name``."""
    return choose_device(requested, os.environ.get(env_name) or None)
