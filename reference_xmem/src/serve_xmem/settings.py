"""This app's settings: the template answers the runtime reads, as Python literals.

The runtime (``sly_vos``) derives everything else from them: the environment variables
``SERVE_XMEM_WEIGHTS`` (a weights file to use instead of downloading),
``SERVE_XMEM_MODEL_DIR`` (where weights are found and downloaded to) and
``SERVE_XMEM_DEVICE`` (force ``cpu`` or ``cuda``). ``app_version`` must agree
with ``config.json`` and ``pyproject.toml`` (the tests check it). The answers the runtime
never reads (app name, SDK pin, port, GPU policy) are in ``config.json``, ``requirements.txt``
and ``docker/Dockerfile``, recorded in ``.cruft.json``.
"""

from __future__ import annotations

from sly_vos import AppSettings

SETTINGS = AppSettings(
    model_name="XMem",
    app_slug="serve-xmem",
    package="serve_xmem",
    app_version="1.0.0",
    weights_url="https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth",
    weights_sha256=None,
    weights_filename="XMem.pth",
    env_prefix="SERVE_XMEM",
)
