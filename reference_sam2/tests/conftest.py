"""Turns on the runtime's test suites for this app and points them at its serving class.

``sly_vos.testing`` adds the contract, server, labeling-tool protocol, reliability, weights
and manifest suites (see its docstring); your own model tests are in ``test_model.py``.
"""

from __future__ import annotations

import pytest

from serve_sam2.app import SAM21Tracker

pytest_plugins = ["sly_vos.testing"]


@pytest.fixture(scope="session")
def app_class() -> type[SAM21Tracker]:
    return SAM21Tracker
