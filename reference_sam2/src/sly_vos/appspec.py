"""Where the runtime finds an app's own parts: its ``settings.SETTINGS`` and its ``model``.

The runtime never imports an app by itself; command-line tools (the weight hook, the
evaluation) are told the app's package name and load the two modules an app owns by
contract. The serving class gets the same two things as class attributes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .settings import AppSettings


class AppSpecError(Exception):
    """An app package does not follow the contract (names the missing part)."""


@dataclass(frozen=True)
class AppSpec:
    """An app's settings and model module (``Tracker``, ``WEIGHTS_REQUIRED``, ...)."""

    settings: AppSettings
    model: ModuleType

    @property
    def weights_required(self) -> bool:
        return bool(getattr(self.model, "WEIGHTS_REQUIRED", False))

    @property
    def random_test_weights(self) -> bool:
        """The model declares that ``make_test_weights`` writes random (untrained) weights."""
        return bool(getattr(self.model, "RANDOM_TEST_WEIGHTS", False))

    def make_tracker(self, weights_path: Path | None, device: str) -> Any:
        return self.model.Tracker(weights_path, device)

    def make_test_weights(self, directory: Path) -> Path | None:
        maker = getattr(self.model, "make_test_weights", None)
        return maker(Path(directory)) if maker is not None else None

    @classmethod
    def from_package(cls, package: str) -> AppSpec:
        """Import ``<package>.settings`` and ``<package>.model``."""
        try:
            settings_module = importlib.import_module(f"{package}.settings")
            model = importlib.import_module(f"{package}.model")
        except ModuleNotFoundError as exc:
            raise AppSpecError(
                f"app package {package!r}: cannot import {exc.name!r} (is src/ on the path?)"
            ) from exc
        settings = getattr(settings_module, "SETTINGS", None)
        if not isinstance(settings, AppSettings):
            raise AppSpecError(f"{package}.settings must define SETTINGS = AppSettings(...)")
        check_model_module(model)
        return cls(settings, model)


def check_model_module(model: ModuleType) -> None:
    """Refuse a model module that lacks the contract's names."""
    name = getattr(model, "__name__", "model")
    if not isinstance(getattr(model, "WEIGHTS_REQUIRED", None), bool):
        raise AppSpecError(f"{name}.WEIGHTS_REQUIRED must be True or False")
    if not callable(getattr(model, "Tracker", None)):
        raise AppSpecError(f"{name}.Tracker must be a class Tracker(weights_path, device)")
