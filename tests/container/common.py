"""What every container step shares: paths, the docker client, errors, loopback ports."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "SLY_VOS_DOCKER_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "sly-vos-docker"


class ContainerUnavailable(RuntimeError):
    """A prerequisite of the container tests is missing (engine, wheel); one line says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(reason.split()))


class BuildFailed(RuntimeError):
    """``docker build`` exited non-zero; ``output`` holds what it printed."""

    def __init__(self, tag: str, returncode: int, output: str) -> None:
        super().__init__(f"docker build of {tag} failed ({returncode}):\n{output[-8000:]}")
        self.output = output


class ContainerNotReady(RuntimeError):
    """The container exited or did not answer ``/is_ready`` in time; ``logs`` says why."""

    def __init__(self, message: str, logs: str, exited: bool) -> None:
        super().__init__(f"{message}\n--- docker logs ---\n{logs[-8000:]}")
        self.logs = logs
        self.exited = exited


def in_ci() -> bool:
    """CI must not pass by skipping: under ``CI=true`` a missing engine is a failure."""
    return os.environ.get("CI", "").strip().lower() == "true"


def cache_dir() -> Path:
    """Where the engine's data, the base image's rootfs and recipe weights are kept."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def docker_env() -> dict[str, str]:
    """The environment for ``docker``: the classic builder (no buildx plugin here)."""
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def docker(
    *args: str, timeout: float = 120.0, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker client; with ``check`` a non-zero exit raises with its output."""
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=docker_env(),
        input=input_text,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port``; TIME_WAIT leftovers of a previous run do not count
    (the servers here bind with ``SO_REUSEADDR`` too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ephemeral_low(default: int = 32768) -> int:
    """Lowest port the kernel hands out to outgoing connections."""
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return default


def stable_port(name: str) -> int:
    """The same loopback port for ``name`` on every run when it is free, else any free one.

    A URL passed as a build arg is part of the classic builder's cache key of every ``RUN``
    after its ``ARG``; a stable port keeps the layer cache between runs. It is picked below
    the ephemeral range, where outgoing connections (pip, apt) would often hold it.
    """
    low = 10000
    span = max(1000, _ephemeral_low() - low)
    port = low + zlib.crc32(name.encode()) % span
    return port if _port_is_free(port) else free_port()


def image_exists(tag: str) -> bool:
    """Whether the engine has an image with this tag."""
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    """The image size in bytes (``docker image inspect``)."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def _unmount_below(path: Path) -> None:
    """Unmount what is mounted at or below ``path`` (a failed debootstrap's /proc, a stopped
    dockerd's netns file) so the folder can be deleted."""
    resolved = str(path.resolve())
    mounts = Path("/proc/mounts").read_text().splitlines() if Path("/proc/mounts").exists() else []
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted(points, key=len, reverse=True):
        if point == resolved or point.startswith(resolved + "/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
