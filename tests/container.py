"""Build and run generated apps' Docker images for real, on a machine without a registry.

The container tests (``tests/test_container.py``) need, in order:

1. an engine: ``docker info`` answers, or Debian's ``docker.io`` is installed with apt and a
   ``dockerd`` of our own is started with its data under a cache directory (and stopped, by
   its PID, at the end; an engine that was already running is left alone);
2. a local base image (no registry can be reached): a debootstrap minbase of the Debian
   release the host's apt sources name, imported, plus Python and the host's CA bundle. It is
   cached by tag and only rebuilt when the tag is missing;
3. a PEP 503 index on loopback that serves the CPU torch wheel found on disk, standing in for
   the CUDA index the Dockerfile names by default;
4. ``docker build -f docker/Dockerfile .`` inside the app's folder, as its README says
   (the Dockerfile unchanged; only build args), and ``docker run`` of the image with the entrypoint of
   the app's ``config.json``, waiting for ``POST /is_ready``.

Timings and image sizes are merged into ``benchmarks/results/container.json``.

The classic builder (``DOCKER_BUILDKIT=0``) is used because the host client has no buildx
plugin. It puts the value of every declared build arg in the cache key of every later
``RUN``, so the URLs passed as build args use stable ports (see :func:`stable_port`): a new
port each run would rebuild every layer every run.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import hashlib
import html
import http.server
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "container.json"
CACHE_ENV = "SLY_VOS_DOCKER_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "sly-vos-docker"
LOCAL_PREFIX = "sly-vos-local"
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu*.whl"
PYPI_SIMPLE = "https://pypi.org/simple"
READY_DEADLINE_S = 180.0
BUILD_TIMEOUT_S = 1800.0
CONTAINER_DATA_DIR = "/sly-app-data"
HOST_CA_IN_IMAGE = "/usr/local/share/sly-vos/host-ca-bundle.crt"


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


# --- engine ---------------------------------------------------------------------------------


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


# --- base image -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of the host's apt sources (one-line or deb822 format)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def _one_line_sources(text: str) -> list[AptSource]:
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        signed_by = None
        options = re.match(r"deb\s+\[([^\]]*)\]\s*", line)
        if options:
            for option in options.group(1).split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    signed_by = value
            line = "deb " + line[options.end() :]
        words = line.split()
        if len(words) >= 3:
            sources.append(AptSource(words[1], (words[2],), tuple(words[3:]), signed_by))
    return sources


def _deb822_sources(text: str) -> list[AptSource]:
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            sources.append(AptSource(uri, suites, components, fields.get("signed-by")))
    return sources


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every ``deb`` entry in ``sources.list`` and ``sources.list.d/*``."""
    sources: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text("utf-8", errors="replace")
        if path.suffix == ".sources":
            sources.extend(_deb822_sources(text))
        elif path.name == "sources.list" or path.suffix == ".list":
            sources.extend(_one_line_sources(text))
    return sources


def host_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    """``VERSION_CODENAME`` of the host, used to prefer the matching apt entry."""
    if not os_release.is_file():
        return None
    for line in os_release.read_text("utf-8").splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"') or None
    return None


def debian_mirror(
    sources: Sequence[AptSource], codename: str | None = None
) -> tuple[str, str, str | None]:
    """(mirror URL, release, keyring) of the main Debian entry of the apt sources.

    A release suite has no ``-updates``/``-security`` suffix and carries ``main``; the host's
    own codename wins over other entries (third-party repositories have odd suites).
    """
    candidates = []
    for source in sources:
        if not source.uri.startswith(("http://", "https://")) or "main" not in source.components:
            continue
        for suite in source.suites:
            if "-" in suite or "/" in suite:
                continue
            rank = (suite != codename, not source.uri.rstrip("/").endswith(("/debian", "/ubuntu")))
            candidates.append((rank, source.uri, suite, source.signed_by))
    if not candidates:
        raise RuntimeError("no Debian release entry with 'main' in the host's apt sources")
    _, uri, suite, keyring = min(candidates)
    return uri, suite, keyring


def image_exists(tag: str) -> bool:
    """Whether the engine has an image with this tag."""
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    """The image size in bytes (``docker image inspect``)."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def host_ca_bundle() -> Path:
    """The CA bundle the host trusts (its package index may sit behind a TLS proxy)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("no CA bundle on the host (SSL_CERT_FILE or /etc/ssl/certs)")


def _unmount_below(path: Path) -> None:
    """Unmount what is mounted at or below ``path`` (a failed debootstrap's /proc, a stopped
    dockerd's netns file) so the folder can be deleted."""
    resolved = str(path.resolve())
    mounts = Path("/proc/mounts").read_text().splitlines() if Path("/proc/mounts").exists() else []
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted(points, key=len, reverse=True):
        if point == resolved or point.startswith(resolved + "/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@dataclass
class BaseImage:
    """The local Python base image tag and what making it cost (0 when it was cached)."""

    tag: str
    created: bool
    debootstrap_s: float = 0.0
    import_s: float = 0.0
    python_s: float = 0.0
    size_bytes: int = 0


PYTHON_BASE_DOCKERFILE = """\
FROM {rootfs_tag}
COPY host-ca-bundle.crt {ca_path}
ENV PIP_CERT={ca_path} \\
    REQUESTS_CA_BUNDLE={ca_path} \\
    SSL_CERT_FILE={ca_path} \\
    PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
"""


def ensure_base_image(cache: Path | None = None, etc_apt: Path = Path("/etc/apt")) -> BaseImage:
    """The local Python base image; made (debootstrap, import, Python layer) only when missing.

    The rootfs keeps debootstrap's apt sources, so the app's own ``apt-get install`` works on
    top. The host CA bundle goes to its own path: ``ca-certificates`` would overwrite the
    system bundle.
    """
    cache = cache or cache_dir()
    mirror, release, keyring = debian_mirror(apt_sources(etc_apt), host_codename())
    rootfs_tag = f"{LOCAL_PREFIX}/debian:{release}"
    python_tag = f"{LOCAL_PREFIX}/python:{release}"
    if image_exists(python_tag):
        return BaseImage(python_tag, created=False, size_bytes=image_size(python_tag))
    base = BaseImage(python_tag, created=True)
    if not image_exists(rootfs_tag):
        if shutil.which("debootstrap") is None:
            apt_install(["debootstrap"])
        rootfs = cache / f"rootfs-{release}"
        if rootfs.exists():
            _unmount_below(rootfs)
            shutil.rmtree(rootfs)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        command = ["debootstrap", "--variant=minbase"]
        if keyring and Path(keyring).is_file():
            command.append(f"--keyring={keyring}")
        began = time.monotonic()
        result = subprocess.run(
            [*command, release, str(rootfs), mirror],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if result.returncode != 0:
            _unmount_below(rootfs)
            raise RuntimeError(
                f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        base.debootstrap_s = time.monotonic() - began
        began = time.monotonic()
        try:
            tar = subprocess.Popen(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
            )
            imported = subprocess.run(
                ["docker", "import", "-", rootfs_tag],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=600,
                env=docker_env(),
                check=False,
            )
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
            if imported.returncode != 0 or tar.returncode != 0:
                raise RuntimeError(f"docker import failed: {imported.stderr[-3000:]}")
        finally:
            _unmount_below(rootfs)
            shutil.rmtree(rootfs, ignore_errors=True)
        base.import_s = time.monotonic() - began
    with tempfile.TemporaryDirectory(prefix="sly-vos-base-") as context:
        shutil.copyfile(host_ca_bundle(), Path(context) / "host-ca-bundle.crt")
        (Path(context) / "Dockerfile").write_text(
            PYTHON_BASE_DOCKERFILE.format(rootfs_tag=rootfs_tag, ca_path=HOST_CA_IN_IMAGE)
        )
        build = build_image(Path(context), python_tag, dockerfile="Dockerfile")
    base.python_s = build.seconds
    base.size_bytes = image_size(python_tag)
    return base


# --- torch index ----------------------------------------------------------------------------


def _pip_find_links() -> list[Path]:
    """Folders pip is told to find wheels in (env and config files)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    configs = [os.environ.get("PIP_CONFIG_FILE"), "/etc/pip.conf", "/etc/xdg/pip/pip.conf"]
    configs += [str(Path.home() / ".config/pip/pip.conf"), str(Path.home() / ".pip/pip.conf")]
    for config_path in configs:
        if not config_path or not Path(config_path).is_file():
            continue
        parser = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error):
            parser.read(config_path)
            for section in parser.sections():
                values += parser.get(section, "find-links", fallback="").split()
    folders = []
    for value in values:
        path = Path(value.removeprefix("file://"))
        if path.is_dir():
            folders.append(path)
    return folders


def find_torch_wheel(pattern: str = TORCH_WHEEL_GLOB, search_roots: Sequence[Path] = ()) -> Path:
    """The CPU torch wheel on disk: pip's find-links folders first, then a walk of the disk."""
    for folder in [*search_roots, *_pip_find_links()]:
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1]
    skipped = {"/proc", "/sys", "/dev", "/run", str(cache_dir())}
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skipped]
        for name in files:
            if Path(name).match(pattern):
                return Path(top) / name
    raise ContainerUnavailable(f"no {pattern} on this machine (pip find-links or disk)")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (for the index's ``#sha256=`` fragment and the weights pin)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_simple_index(root: Path, wheels: Sequence[Path]) -> None:
    """A PEP 503 folder: ``simple/<project>/index.html`` linking to each wheel (with sha256)."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        projects.setdefault(name, []).append(wheel)
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "simple").mkdir(parents=True, exist_ok=True)
    for name, files in projects.items():
        links = []
        for wheel in files:
            target = root / "files" / wheel.name
            if not target.exists():
                target.symlink_to(wheel.resolve())
            href = f"../../files/{urllib.parse.quote(wheel.name)}#sha256={sha256_of(wheel)}"
            links.append(f'<a href="{html.escape(href)}">{html.escape(wheel.name)}</a><br>')
        (root / "simple" / name).mkdir(exist_ok=True)
        (root / "simple" / name / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )
    anchors = "\n".join(f'<a href="{n}/">{n}</a><br>' for n in sorted(projects))
    (root / "simple" / "index.html").write_text(
        f"<!DOCTYPE html><html><body>\n{anchors}\n</body></html>\n"
    )


def _index_handler(root: Path, upstream: str) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        """Static PEP 503 folder; projects it lacks redirect to ``upstream``.

        ``pip install torch --index-url`` sends torch's dependencies (filelock, sympy, ...)
        to this index too; PyTorch's own index has them, our folder only has torch.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def _redirect_unknown_project(self) -> bool:
            match = re.fullmatch(r"/simple/([^/]+)/?", urllib.parse.urlsplit(self.path).path)
            if not match:
                return False
            name = re.sub(r"[-_.]+", "-", urllib.parse.unquote(match.group(1))).lower()
            if (root / "simple" / name).is_dir():
                return False
            self.send_response(302)
            self.send_header("Location", f"{upstream.rstrip('/')}/{name}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._redirect_unknown_project():
                super().do_GET()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            if not self._redirect_unknown_project():
                super().do_HEAD()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@contextlib.contextmanager
def serve_folder(
    handler: type[http.server.BaseHTTPRequestHandler], port: int
) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve on 127.0.0.1:``port`` in a thread for the duration of the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def torch_index(
    workdir: Path, wheel: Path | None = None, upstream: str = PYPI_SIMPLE
) -> Iterator[str]:
    """A loopback PEP 503 index with the CPU torch wheel; yields its ``TORCH_INDEX_URL``."""
    wheel = wheel or find_torch_wheel()
    root = workdir / "torch-index"
    write_simple_index(root, [wheel])
    port = stable_port("torch-index")
    with serve_folder(_index_handler(root, upstream), port):
        yield f"http://127.0.0.1:{port}/simple"


@contextlib.contextmanager
def serve_files(folder: Path, name: str) -> Iterator[str]:
    """Serve ``folder`` on a stable loopback port; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    port = stable_port(name)
    with serve_folder(Quiet, port):
        yield f"http://127.0.0.1:{port}"


# --- build ----------------------------------------------------------------------------------


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


# --- results --------------------------------------------------------------------------------


def record(section: str, name: str, values: Mapping[str, Any], path: Path = RESULTS_PATH) -> None:
    """Merge ``values`` into ``path`` under ``section``/``name`` (other entries are kept)."""
    data: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(path.read_text("utf-8"))
    data["name"] = "container"
    data["command"] = ".venv/bin/python -m pytest tests/test_container.py"
    data["machine"] = {"cores": os.cpu_count(), "platform": platform.platform()}
    entry = data.setdefault(section, {}).setdefault(name, {})
    entry.update(values)
    entry["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", "utf-8")
    tmp.replace(path)


def build_record(build: BuildResult) -> dict[str, Any]:
    """The numbers of a build worth keeping: time, cache use, size and slow steps."""
    size = image_size(build.tag) if build.returncode == 0 else None
    return {
        "build_s": round(build.seconds, 2),
        "cached_steps": build.cached_steps,
        "steps": len(build.steps),
        "size_bytes": size,
        "size_gb": round(size / 1e9, 3) if size else None,
        "slow_steps": [
            {"step": step["step"], "s": step["s"]} for step in build.steps if step["s"] >= 2.0
        ],
    }
