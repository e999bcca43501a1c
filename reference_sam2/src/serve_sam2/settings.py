"""This app's settings: the template answers the runtime reads, as Python literals.

The runtime (``sly_vos``) derives everything else from them: the environment variables
``SERVE_SAM2_WEIGHTS`` (a weights file to use instead of downloading),
``SERVE_SAM2_MODEL_DIR`` (where weights are found and downloaded to) and
``SERVE_SAM2_DEVICE`` (force ``cpu`` or ``cuda``). ``app_version`` must agree
with ``config.json`` and ``pyproject.toml`` (the tests check it). The answers the runtime
never reads (app name, SDK pin, port, GPU policy) are in ``config.json``, ``requirements.txt``
and ``docker/Dockerfile``, recorded in ``.cruft.json``.
"""

from __future__ import annotations

from sly_vos import AppSettings

SETTINGS = AppSettings(
    model_name="SAM 2.1",
    app_slug="serve-sam2",
    package="serve_sam2",
    app_version="1.0.0",
    weights_url=None,
    weights_sha256=None,
    weights_filename="weights.pth",
    env_prefix="SERVE_SAM2",
)
