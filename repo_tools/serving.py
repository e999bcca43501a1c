"""Serving an app folder on loopback, as its own tests do, from the repository's tools.

``serve_env`` is the environment of ``uvicorn main:model.app`` outside a Supervisely
session: development mode, the model on the CPU, the allocator setting of the image, and
either placeholder platform credentials (nothing is contacted: ``/track-api-files`` needs no
platform) or those of a ``PlatformStandIn`` (the labeling tool's endpoints call it). It is
built by the runtime's ``sly_vos.testing.server.serving_env``, as the apps' ``server_env``
fixture is: one builder. ``served`` runs the server (``sly_vos.testing.server.Server``: a
subprocess on a free port, ready when ``/is_ready`` answers) for a ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import CACHE_DIR, REFERENCE_DIR, reference_on_path
from .baking import App

PLACEHOLDER_ADDRESS = "http://127.0.0.1:9"  # discard port: a call would fail at once
PLACEHOLDER_TOKEN = "placeholder-token-of-repo-tools"
XMEM_WEIGHTS = CACHE_DIR / "xmem-recipe-v1.pth"
# Never copied with the reference app: local state, caches, weights.
COPY_IGNORED = (
    ".venv",
    "__pycache__",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "*.pth",
    "out",
)


def serve_env(
    app: App,
    workdir: Path,
    *,
    platform: Any = None,
    weights: Path | None = None,
    device: str = "cpu",
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of ``app`` served on loopback, built by the runtime's one builder
    (``sly_vos.testing.server.serving_env``, which the apps' ``server_env`` fixture uses);
    ``workdir`` gets its ``app_data`` and ``model_dir`` folders.

    ``platform``: a started ``PlatformStandIn`` (anything with ``url`` and ``token``) for
    ``SERVER_ADDRESS`` / ``API_TOKEN``; placeholders otherwise. ``weights``: a file for
    ``<PREFIX>_WEIGHTS``. ``device`` goes to ``<PREFIX>_DEVICE``. ``base`` (default: this
    process's environment, without pytest's and the venv's variables, and without
    ``PYTHONPATH``: the server imports from its own ``src/``) is copied, ``extra`` added last.
    """
    settings = app.settings()  # puts the app's src/ (and its runtime copy) on the path
    from sly_vos.testing.server import serving_env

    source = os.environ if base is None else base
    kept = {k: v for k, v in source.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    kept.pop("PYTHONPATH", None)
    return serving_env(
        settings,
        workdir,
        server_address=platform.url if platform is not None else PLACEHOLDER_ADDRESS,
        api_token=platform.token if platform is not None else PLACEHOLDER_TOKEN,
        weights=weights,
        device=device,
        base=kept,
        **extra,
    )


@contextlib.contextmanager
def served(app: App, env: Mapping[str, str], log_path: Path) -> Iterator[Any]:
    """``app`` served by uvicorn on 127.0.0.1 for the block; yields the running
    ``sly_vos.testing.server.Server`` (``base_url``, ``post``, ``rss``, ``proc``, ...).

    The server's log goes to ``log_path``; its tail is printed to stderr when the block
    fails, and the server is stopped in every case."""
    app.on_path()
    from sly_vos.testing.server import Server

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    server = Server(app.root, dict(env), Path(log_path))
    server.start()
    try:
        yield server
    except BaseException:
        print(f"--- server log ({log_path}), last lines:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


def reference_copy(folder: Path) -> App:
    """A copy of ``reference_xmem`` in ``folder`` (a server must not write into the
    repository); its link to the runtime becomes a real copy."""
    root = Path(folder) / REFERENCE_DIR.name
    shutil.copytree(REFERENCE_DIR, root, ignore=shutil.ignore_patterns(*COPY_IGNORED))
    return App.at(root, "serve_xmem")


def xmem_weights() -> Path:
    """XMem recipe weights (deterministic, ~249 MB), written once to the git-ignored cache.

    Random-but-fixed weights cost exactly what the real XMem.pth costs (same shapes) and need
    no download; the file is written atomically so a concurrent run never reads half of it.
    """
    if XMEM_WEIGHTS.is_file():
        return XMEM_WEIGHTS
    reference_on_path()
    from xmem.recipe import write_recipe_weights

    XMEM_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    partial = XMEM_WEIGHTS.with_name(f"{XMEM_WEIGHTS.name}.{os.getpid()}.partial")
    write_recipe_weights(partial)
    partial.replace(XMEM_WEIGHTS)
    return XMEM_WEIGHTS


__all__ = [
    "PLACEHOLDER_ADDRESS",
    "PLACEHOLDER_TOKEN",
    "XMEM_WEIGHTS",
    "reference_copy",
    "serve_env",
    "served",
    "xmem_weights",
]
