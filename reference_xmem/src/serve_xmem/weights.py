"""Find or download the model weights (placeholder, being written)."""

from __future__ import annotations

import os
from pathlib import Path

from . import settings


class WeightsError(Exception):
    """The weights file could not be found, downloaded or verified."""


def default_model_dir() -> Path:
    env = os.environ.get(settings.MODEL_DIR_ENV)
    if env:
        return Path(env)
    if Path(settings.DOCKER_MODEL_DIR).is_dir():
        return Path(settings.DOCKER_MODEL_DIR)
    return Path.home() / ".cache" / settings.APP_SLUG


def resolve_weights(model_dir: str | os.PathLike | None) -> Path:
    if model_dir is not None and (Path(model_dir) / settings.WEIGHTS_FILENAME).is_file():
        return Path(model_dir) / settings.WEIGHTS_FILENAME
    env = os.environ.get(settings.WEIGHTS_ENV)
    if env and Path(env).is_file():
        return Path(env)
    raise WeightsError(f"weights not found; set {settings.WEIGHTS_ENV}")
