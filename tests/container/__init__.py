"""Build and run generated apps' Docker images for real, on a machine without a registry.

The container tests (``tests/test_container.py``) need, in order, one module each:

1. ``engine``: ``docker info`` answers, or Debian's ``docker.io`` is installed with apt and
   a ``dockerd`` of our own is started with its data under a cache directory (and stopped,
   by its PID, at the end; an engine that was already running is left alone);
2. ``base_image``: a local base image (no registry can be reached): a debootstrap minbase of
   the Debian release the host's apt sources name, imported, plus Python and the host's CA
   bundle. It is cached by tag and only rebuilt when the tag is missing;
3. ``package_index``: a PEP 503 index on loopback that serves the CPU torch wheel found on
   disk, standing in for the CUDA index the Dockerfile names by default;
4. ``images``: ``docker build -f docker/Dockerfile .`` inside the app's folder, as its README
   says (the Dockerfile unchanged; only build args), and ``docker run`` of the image with the
   entrypoint of the app's ``config.json``, waiting for ``POST /is_ready``.

``results`` merges timings and image sizes into ``benchmarks/results/container.json``;
``common`` holds what they share (the docker client, errors, loopback ports).

The classic builder (``DOCKER_BUILDKIT=0``) is used because the host client has no buildx
plugin. It puts the value of every declared build arg in the cache key of every later
``RUN``, so the URLs passed as build args use stable ports (see :func:`stable_port`): a new
port each run would rebuild every layer every run.
"""

from .base_image import BaseImage, ensure_base_image
from .common import (
    REPO_ROOT,
    BuildFailed,
    ContainerNotReady,
    ContainerUnavailable,
    cache_dir,
    docker,
    in_ci,
)
from .engine import Engine, start_engine
from .images import AppContainer, BuildResult, build_image, remove_started_containers
from .package_index import find_torch_wheel, serve_files, sha256_of, torch_index
from .results import build_record, record

__all__ = [
    "REPO_ROOT",
    "AppContainer",
    "BaseImage",
    "BuildFailed",
    "BuildResult",
    "ContainerNotReady",
    "ContainerUnavailable",
    "Engine",
    "build_image",
    "build_record",
    "cache_dir",
    "docker",
    "ensure_base_image",
    "find_torch_wheel",
    "in_ci",
    "record",
    "remove_started_containers",
    "serve_files",
    "sha256_of",
    "start_engine",
    "torch_index",
]
