"""The local base image: a debootstrap minbase of the host's Debian release, plus Python."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import _unmount_below, cache_dir, docker_env, image_exists, image_size
from .engine import apt_install
from .images import build_image

LOCAL_PREFIX = "sly-vos-local"
HOST_CA_IN_IMAGE = "/usr/local/share/sly-vos/host-ca-bundle.crt"


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


def host_ca_bundle() -> Path:
    """The CA bundle the host trusts (its package index may sit behind a TLS proxy)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("no CA bundle on the host (SSL_CERT_FILE or /etc/ssl/certs)")


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
