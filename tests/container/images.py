"""Build an app's image the way its README says, and run it with its ``config.json`` entrypoint."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .common import BuildFailed, ContainerNotReady, docker, docker_env, free_port

READY_DEADLINE_S = 180.0
BUILD_TIMEOUT_S = 1800.0
CONTAINER_DATA_DIR = "/sly-app-data"


@dataclass
class BuildResult:
    """What one ``docker build`` did: exit code, output, seconds and per-step seconds."""

    tag: str
    returncode: int
    output: str
    seconds: float
    steps: list[dict[str, Any]]

    @property
    def cached_steps(self) -> int:
        return sum(1 for step in self.steps if step.get("cached"))

    @property
    def cold(self) -> bool:
        """No ``RUN`` step came from the layer cache (metadata steps always may)."""
        return not any(step.get("cached") and " RUN " in step["step"] for step in self.steps)


def build_image(
    context: Path,
    tag: str,
    build_args: Mapping[str, str] | None = None,
    dockerfile: str = "docker/Dockerfile",
    timeout_s: float = BUILD_TIMEOUT_S,
    check: bool = True,
) -> BuildResult:
    """``docker build -f docker/Dockerfile .`` run inside ``context``, as an app's README
    tells its users (plus ``--network host`` for the loopback index and weights).

    Output is read line by line so each ``Step`` gets its own duration. ``--force-rm``: a
    failed step's container is removed too (the classic builder keeps it otherwise).
    """
    command = ["docker", "build", "--network", "host", "--force-rm", "-f", dockerfile]
    command += ["-t", tag]
    for key, value in (build_args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(".")
    began = time.monotonic()
    steps: list[dict[str, Any]] = []
    lines: list[str] = []
    process = subprocess.Popen(
        command,
        cwd=context,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=docker_env(),
    )
    killed = threading.Event()

    def _kill() -> None:
        killed.set()
        process.kill()

    timer = threading.Timer(timeout_s, _kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Step "):
                now = time.monotonic() - began
                if steps:
                    steps[-1]["s"] = round(now - steps[-1].pop("_at"), 2)
                steps.append({"step": " ".join(line.split())[:80], "_at": now})
            elif steps and line.strip() == "---> Using cache":
                steps[-1]["cached"] = True
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:  # interrupted (test timeout): do not leave the build running
            process.kill()
            process.wait(timeout=60)
    seconds = time.monotonic() - began
    if steps:
        steps[-1]["s"] = round(seconds - steps[-1].pop("_at"), 2)
    output = "".join(lines)
    if killed.is_set():
        output += f"\n(docker build killed after {timeout_s:.0f} s)\n"
    result = BuildResult(tag, process.returncode, output, seconds, steps)
    if check and process.returncode != 0:
        raise BuildFailed(tag, process.returncode, output)
    return result


# --- run ------------------------------------------------------------------------------------


def app_command(config_path: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The app's ``config.json`` entrypoint with ``--port``/``--host`` set for this run."""
    words = shlex.split(json.loads(config_path.read_text("utf-8"))["entrypoint"])
    for flag, value in (("--port", str(port)), ("--host", host)):
        if flag in words:
            words[words.index(flag) + 1] = value
        else:
            words += [flag, value]
    return words


def container_env(data_dir: str = CONTAINER_DATA_DIR) -> dict[str, str]:
    """Placeholder Supervisely settings: the app must start without reaching an instance."""
    return {
        "SLY_APP_DATA_DIR": data_dir,
        "SERVER_ADDRESS": "http://127.0.0.1:9",
        "API_TOKEN": "placeholder",
        "ENV": "development",
    }


_STARTED: set[str] = set()


class AppContainer:
    """``docker run`` of an app image with its own entrypoint; removed on exit of the block."""

    def __init__(self, image: str, config_path: Path, data_dir: Path, name: str) -> None:
        self.image = image
        self.port = free_port()
        self.command = app_command(config_path, self.port)
        self.data_dir = data_dir
        self.name = f"{name}-{os.getpid()}-{self.port}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ready_s: float | None = None

    def start(self) -> AppContainer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env_args = [arg for k, v in container_env().items() for arg in ("-e", f"{k}={v}")]
        _STARTED.add(self.name)
        self._began = time.monotonic()
        docker(
            "run", "-d", "--name", self.name, "--network", "host",
            "-v", f"{self.data_dir}:{CONTAINER_DATA_DIR}",
            *env_args, self.image, *self.command,
            timeout=120,
        )  # fmt: skip
        return self

    def running(self) -> bool:
        state = docker("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        result = docker("logs", self.name, check=False, timeout=60)
        return result.stdout + result.stderr

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> float:
        """Seconds from ``docker run`` until ``POST /is_ready`` answers 200; raises otherwise."""
        while time.monotonic() - self._began < deadline_s:
            try:
                if requests.post(f"{self.base_url}/is_ready", timeout=2).status_code == 200:
                    self.ready_s = time.monotonic() - self._began
                    return self.ready_s
            except requests.RequestException:
                pass
            if not self.running():
                raise ContainerNotReady(
                    f"{self.image} exited before /is_ready answered", self.logs(), exited=True
                )
            time.sleep(0.3)
        raise ContainerNotReady(
            f"{self.image}: /is_ready did not answer in {deadline_s:.0f} s", self.logs(), False
        )

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=120)
        _STARTED.discard(self.name)

    def __enter__(self) -> AppContainer:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def remove_started_containers() -> None:
    """Remove every container this process started and has not removed yet (a safety net)."""
    for name in sorted(_STARTED):
        docker("rm", "-f", name, check=False, timeout=120)
        _STARTED.discard(name)
