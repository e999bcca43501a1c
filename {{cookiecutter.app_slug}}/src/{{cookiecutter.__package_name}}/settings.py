"""Everything the app's code needs from the template answers, as Python literals.

Generated from the cookiecutter answers (recorded in ``.cruft.json``); the versions here
must agree with ``config.json``, ``requirements.txt`` and ``docker/Dockerfile``.
"""

from __future__ import annotations

MODEL_NAME: str = {{ cookiecutter.model_name|py_str }}
APP_NAME: str = {{ cookiecutter.app_name|py_str }}
APP_SLUG: str = "{{ cookiecutter.app_slug }}"
PACKAGE: str = "{{ cookiecutter.__package_name }}"
APP_VERSION: str = "{{ cookiecutter.app_version }}"
SDK_VERSION: str = "{{ cookiecutter.sdk_version }}"
PORT: int = {{ cookiecutter.port|int }}

# Weights: looked for in the model dir, then at $WEIGHTS_ENV, then downloaded.
WEIGHTS_URL: str = {{ cookiecutter.weights_url|py_str }}
WEIGHTS_SHA256: str | None = {{ cookiecutter.weights_sha256|py_str if cookiecutter.weights_sha256 else "None" }}
WEIGHTS_FILENAME: str = "{{ cookiecutter.__weights_filename }}"
WEIGHTS_ENV: str = "{{ cookiecutter.__env_prefix }}_WEIGHTS"
MODEL_DIR_ENV: str = "{{ cookiecutter.__env_prefix }}_MODEL_DIR"
DEVICE_ENV: str = "{{ cookiecutter.__env_prefix }}_DEVICE"
DOCKER_MODEL_DIR: str = "/weights"

# GPU policy of the manifest: "required", "preferred" or "no".
GPU: str = "{{ cookiecutter.gpu }}"
