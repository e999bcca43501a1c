"""This app's settings: the template answers the runtime reads, as Python literals.

The runtime (``sly_vos``) derives everything else from them: the environment variables
``{{ cookiecutter.__env_prefix }}_WEIGHTS`` (a weights file to use instead of downloading),
``{{ cookiecutter.__env_prefix }}_MODEL_DIR`` (where weights are found and downloaded to) and
``{{ cookiecutter.__env_prefix }}_DEVICE`` (force ``cpu`` or ``cuda``). ``app_version`` must agree
with ``config.json`` and ``pyproject.toml`` (the tests check it). The answers the runtime
never reads (app name, SDK pin, port, GPU policy) are in ``config.json``, ``requirements.txt``
and ``docker/Dockerfile``, recorded in ``.cruft.json``.
"""

from __future__ import annotations

from sly_vos import AppSettings

SETTINGS = AppSettings(
    model_name={{ cookiecutter.model_name|py_str }},
    app_slug="{{ cookiecutter.app_slug }}",
    package="{{ cookiecutter.__package_name }}",
    app_version="{{ cookiecutter.app_version }}",
    weights_url={{ cookiecutter.weights_url|py_str if cookiecutter.weights_url else "None" }},
    weights_sha256={{ cookiecutter.weights_sha256|sha256|py_str if cookiecutter.weights_sha256 else "None" }},
    weights_filename="{{ cookiecutter.__weights_filename }}",
    env_prefix="{{ cookiecutter.__env_prefix }}",
)
