"""Turns on the runtime's test suites for this app and points them at its serving class.

``sly_vos.testing`` adds the contract, server, labeling-tool protocol, reliability, weights
and manifest suites (see its docstring); your own model tests are in ``test_model.py``.
"""

from __future__ import annotations

import pytest

from {{ cookiecutter.__package_name }}.app import {{ cookiecutter.__class_name }}

pytest_plugins = ["sly_vos.testing"]


@pytest.fixture(scope="session")
def app_class() -> type[{{ cookiecutter.__class_name }}]:
    return {{ cookiecutter.__class_name }}
