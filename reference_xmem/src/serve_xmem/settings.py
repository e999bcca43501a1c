"""Everything the app's code needs from the template answers, as Python literals.

Generated from the cookiecutter answers (recorded in ``.cruft.json``); the versions here
must agree with ``config.json``, ``requirements.txt`` and ``docker/Dockerfile``.
"""

from __future__ import annotations

MODEL_NAME: str = 'XMem'
APP_NAME: str = 'Serve XMem'
APP_SLUG: str = "serve-xmem"
PACKAGE: str = "serve_xmem"
APP_VERSION: str = "1.0.0"
SDK_VERSION: str = "6.74.51"
PORT: int = 8000

# Weights: looked for in the model dir, then at $WEIGHTS_ENV, then downloaded.
WEIGHTS_URL: str = 'https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth'
WEIGHTS_SHA256: str | None = None
WEIGHTS_FILENAME: str = "XMem.pth"
WEIGHTS_ENV: str = "SERVE_XMEM_WEIGHTS"
MODEL_DIR_ENV: str = "SERVE_XMEM_MODEL_DIR"
DEVICE_ENV: str = "SERVE_XMEM_DEVICE"
DOCKER_MODEL_DIR: str = "/weights"

# GPU policy of the manifest: "required", "preferred" or "no".
GPU: str = "preferred"
