"""A PEP 503 index on loopback for the CPU torch wheel, and loopback file servers."""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import html
import http.server
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .common import ContainerUnavailable, cache_dir, stable_port

PYPI_SIMPLE = "https://pypi.org/simple"
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu*.whl"


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
