"""This app's settings: the template answers it was generated with, as Python literals.

The runtime (``sly_vos``) derives everything else from them: the environment variables
``SERVE_SAM2_WEIGHTS`` (a weights file to use instead of downloading),
``SERVE_SAM2_MODEL_DIR`` (where weights are found and downloaded to) and
``SERVE_SAM2_DEVICE`` (force ``cpu`` or ``cuda``). The versions must agree
with ``config.json``, ``requirements.txt`` and ``docker/Dockerfile`` (the tests check it).
"""

from __future__ import annotations

from sly_vos import AppSettings

SETTINGS = AppSettings(
    model_name='SAM 2.1',
    app_name='Serve SAM 2.1',
    app_slug="serve-sam2",
    package="serve_sam2",
    app_version="1.0.0",
    sdk_version="6.74.51",
    port=8000,
    weights_url=None,
    weights_sha256=None,
    weights_filename="weights.pth",
    env_prefix="SERVE_SAM2",
    gpu="preferred",
)
