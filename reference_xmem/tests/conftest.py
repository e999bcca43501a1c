"""Shared fixtures: test weights (offline) and the environment of a real server process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_xmem import model, settings

APP_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def app_root() -> Path:
    """The app folder (holds config.json, src/, docker/)."""
    return APP_ROOT


@pytest.fixture(scope="session")
def test_weights(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Weights the model can load offline (``None`` when the model needs none)."""
    return model.make_test_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def server_env(
    test_weights: Path | None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment for ``uvicorn main:model.app``: no Supervisely instance is contacted."""
    env = dict(os.environ)
    env.update(
        SLY_APP_DATA_DIR=str(tmp_path_factory.mktemp("app_data")),
        SERVER_ADDRESS="http://127.0.0.1:9",
        API_TOKEN="placeholder-token-for-tests",
        PYTHONUNBUFFERED="1",
    )
    env[settings.MODEL_DIR_ENV] = str(tmp_path_factory.mktemp("model_dir"))
    env.pop(settings.DEVICE_ENV, None)
    if test_weights is not None:
        env[settings.WEIGHTS_ENV] = str(test_weights)
    return env
