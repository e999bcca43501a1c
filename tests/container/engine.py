"""A Docker engine: the one running, or Debian's ``docker.io`` with a ``dockerd`` of our own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .common import ContainerUnavailable, _last_line, _unmount_below, cache_dir, docker_env


def engine_answers(timeout_s: float = 20.0) -> bool:
    """Whether ``docker info`` gets an answer from a daemon."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=docker_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def apt_install(packages: Sequence[str], timeout_s: float = 900.0) -> None:
    """``apt-get update`` then install ``packages`` (lists may be missing on a new machine)."""
    if shutil.which("apt-get") is None:
        raise ContainerUnavailable(f"{', '.join(packages)} missing and there is no apt-get")
    if os.geteuid() != 0:
        raise ContainerUnavailable(f"{', '.join(packages)} missing and apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
    ):
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerUnavailable(f"{' '.join(command)} ran past {timeout_s:.0f} s") from exc
        if result.returncode != 0:
            raise ContainerUnavailable(
                f"{' '.join(command)} failed ({result.returncode}): "
                f"{_last_line(result.stderr or result.stdout)}"
            )


@dataclass
class Engine:
    """A reachable docker daemon; ``process`` is set only when this helper started it."""

    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    roots: tuple[Path, ...] = ()
    installed: list[str] = field(default_factory=list)
    install_s: float = 0.0
    start_s: float = 0.0

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the dockerd this helper started (by its PID); leave any other one running.

        Once it has exited, what it left mounted under its roots (the ``netns/default`` file,
        the data root's private bind mount) is unmounted so the cache can be deleted.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        for root in self.roots:
            _unmount_below(root)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_engine(cache: Path | None = None, ready_s: float = 60.0) -> Engine:
    """Use a running engine, or install ``docker.io``/``debootstrap`` and start ``dockerd``.

    The daemon keeps its images under ``cache`` so the layer cache and the base image outlive
    the run; it listens on the default socket so ``docker`` finds it without settings.
    """
    cache = cache or cache_dir()
    if engine_answers():
        return Engine()
    engine = Engine()
    began = time.monotonic()
    needed = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
    missing = [package for command, package in needed.items() if shutil.which(command) is None]
    if missing:
        apt_install(missing)
        engine.installed = missing
    if shutil.which("dockerd") is None:
        raise ContainerUnavailable("dockerd not found on PATH even after installing docker.io")
    if shutil.which("docker") is None:
        raise ContainerUnavailable("no docker client on PATH")
    engine.install_s = time.monotonic() - began

    began = time.monotonic()
    try:
        for sub in ("data-root", "exec-root"):
            (cache / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ContainerUnavailable(f"cannot use {cache} for dockerd's data: {exc}") from exc
    engine.log_path = cache / "dockerd.log"
    engine.roots = (cache / "exec-root", cache / "data-root")
    command = [
        "dockerd",
        "--data-root", str(cache / "data-root"),
        "--exec-root", str(cache / "exec-root"),
        "--pidfile", str(cache / "dockerd.pid"),
    ]  # fmt: skip
    with open(engine.log_path, "ab") as log:
        engine.process = subprocess.Popen(  # noqa: S603 - fixed command
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = began + ready_s
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            tail = engine.log_path.read_text("utf-8", errors="replace")
            raise ContainerUnavailable(
                f"dockerd exited with code {engine.process.returncode}: {_last_line(tail)}"
            )
        if engine_answers(timeout_s=5):
            engine.start_s = time.monotonic() - began
            return engine
        time.sleep(0.5)
    engine.stop()
    raise ContainerUnavailable(f"dockerd started but docker info did not answer in {ready_s} s")
