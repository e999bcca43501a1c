"""Shared SAM 2 test weights for the test modules (conftest.py is the template's): written
once per session under pytest's base temp folder, reused by every module."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_sam2 import model as sam2

SHORT_WINDOW = 3  # frames of outputs the app keeps with the short-memory configuration


def short_memory_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hiera-tiny at S=128 with a 3-frame memory and 4 object pointers, so that a short
    clip already runs past the window of outputs the app keeps."""
    config = sam2.small_config()
    config.num_maskmem = SHORT_WINDOW
    config.max_object_pointers_in_encoder = SHORT_WINDOW + 1
    # Seed 0: the random object-score head keeps both objects (with some seeds it drops them).
    folder = tmp_path_factory.getbasetemp() / "sam2-short-memory"
    return sam2.write_random_weights(folder, config, seed=0)
