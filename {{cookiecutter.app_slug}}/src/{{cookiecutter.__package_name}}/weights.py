"""Find, download and verify the model weights; load checkpoints without running their code.

Where the weights come from (``resolve_weights``): ``<model_dir>/<WEIGHTS_FILENAME>`` first,
then the file named by ``$<PKG>_WEIGHTS``, then a download of ``settings.WEIGHTS_URL`` into
``model_dir``. The Docker image bakes the file in at build time with the CLI::

    python -m <pkg>.weights [--dest DIR] [--url URL] [--sha256 HEX] [--if-required] [--quiet]

What a download guarantees (``download_weights``):

* The destination path only ever holds a complete file: bytes stream to ``<name>.part`` in the
  same directory, are fsynced, checked (announced length, sha256 when given) and renamed with
  ``os.replace``; the directory is fsynced after the rename.
* Transient failures (connection errors, timeouts, HTTP 5xx and 429, a body shorter than its
  ``Content-Length``) are retried ``policy.attempts`` times in all, with exponential backoff
  capped at ``policy.max_backoff_s``; ``Retry-After`` is honoured within that cap. Every
  socket read has a timeout (``policy.read_timeout_s``).
* A retry resumes with ``Range`` (and ``If-Range`` when the server gave a strong ETag or a
  Last-Modified date) and checks ``Content-Range``; a server that answers 200, 416 or an
  inconsistent ``Content-Range`` gets a restart from zero instead. The partial file is kept
  only for the URL it came from (recorded in ``<name>.part.json``).
* A body longer than its ``Content-Length`` cannot be seen by an HTTP/1.1 client (it stops
  at the announced length); it shows up as a checksum mismatch. A mismatch is therefore
  treated as one failed attempt: the file is downloaded once more from zero, and a second
  mismatch is an error. Pin ``weights_sha256`` to get this protection.
* Two processes downloading the same file serialise on ``.<name>.lock`` (``fcntl.flock``):
  one downloads, the other waits (at most ``policy.lock_timeout_s``) and then uses the
  verified file. The lock file stays (removing a flock file while others wait on it races).

Decisions (documented for users of the template):

* Only ``https://`` and ``file://`` URLs are accepted; plain ``http://`` needs
  ``allow_http=True`` (``--allow-http``), meant for tests and trusted local mirrors. Every
  redirect must land on an ``https://`` URL, whatever the first URL was.
* A file already at the destination whose sha256 differs from the expected one is never used
  and never deleted: it is moved aside to ``<name>.mismatch-<UTC time>`` and the file is
  downloaded again.
* When all attempts fail on transient errors, a non-empty ``.part`` is kept so that the next
  run resumes it (the error says so); any other failure removes it.
* The ``$<PKG>_WEIGHTS`` override is used as given, without the checksum: it is how you run
  your own (fine-tuned) file. ``load_checkpoint`` still refuses code in it.

Errors are ``WeightsError``, deliberately not a ``RuntimeError``: the SDK retries
``load_on_device`` on CPU after a ``RuntimeError``, which would only repeat the failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import EllipsisType
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import requests
from tqdm import tqdm

from . import settings

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_MISMATCH_DOWNLOADS = 2  # one fresh download after a checksum mismatch, then an error
_LOCK_POLL_S = 0.1


class WeightsError(Exception):
    """The weights file could not be found, downloaded, verified or loaded.

    Not a ``RuntimeError`` on purpose (see the module docstring).
    """


class _ResumableError(WeightsError):
    """All attempts failed on transient errors; the ``.part`` file is kept for a later run."""


class _Transient(Exception):
    """One attempt failed in a way a later attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class DownloadPolicy:
    """Bounds and switches of one download; defaults suit a large file over the internet."""

    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 60.0
    lock_timeout_s: float = 3600.0
    chunk_bytes: int = 256 * 1024
    allow_http: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        rules: list[tuple[str, bool, str]] = [
            ("attempts", 1 <= self.attempts <= 20, "must be an integer from 1 to 20"),
            ("backoff_s", 0 <= self.backoff_s <= 600, "must be from 0 to 600"),
            (
                "max_backoff_s",
                self.backoff_s <= self.max_backoff_s <= 600,
                "must be from backoff_s to 600",
            ),
            ("connect_timeout_s", 0 < self.connect_timeout_s <= 600, "must be in (0, 600]"),
            ("read_timeout_s", 0 < self.read_timeout_s <= 600, "must be in (0, 600]"),
            ("lock_timeout_s", 0 < self.lock_timeout_s <= 86400, "must be in (0, 86400]"),
            ("chunk_bytes", 1 <= self.chunk_bytes <= 64 * 1024 * 1024, "must be from 1 to 64 MiB"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"DownloadPolicy.{name}: {getattr(self, name)!r} {rule}")

    def delay_s(self, failures: int, retry_after: float | None) -> float:
        """Seconds to wait after ``failures`` failed attempts (bounded exponential backoff)."""
        delay = self.backoff_s * 2 ** (failures - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(self.max_backoff_s, delay)


# ---------------------------------------------------------------- paths and small helpers


def default_model_dir() -> Path:
    """``$<PKG>_MODEL_DIR``, else ``/weights`` when it exists (Docker), else ``~/.cache/<slug>``."""
    env = os.environ.get(settings.MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if Path(settings.DOCKER_MODEL_DIR).is_dir():
        return Path(settings.DOCKER_MODEL_DIR)
    return Path.home() / ".cache" / settings.APP_SLUG


def part_path(dest: Path) -> Path:
    """Where the download of ``dest`` is streamed to (and kept for resuming)."""
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    """The lock file that serialises downloads of ``dest``."""
    return dest.with_name(f".{dest.name}.lock")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def normalize_sha256(value: str | None) -> str | None:
    """Lower-case 64-hex-digit digest, or ``None`` for no check (``None`` or empty)."""
    if value is None or not value.strip():
        return None
    digest = value.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise WeightsError(f"sha256: {value!r} must be 64 hexadecimal digits (or empty)")
    return digest


def sha256_of(path: Path, chunk_bytes: int = 1024 * 1024) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(dest: Path) -> str:
    return f"to place the file by hand, put it at {dest} or set ${settings.WEIGHTS_ENV} to its path"


def _discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_url(url: str, allow_http: bool) -> str:
    """The URL's scheme, after refusing the ones we do not download from."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return scheme
    if scheme not in ("https", "http"):
        raise WeightsError(f"weights URL {url!r}: scheme must be https:// or file://")
    if not parts.hostname:
        raise WeightsError(f"weights URL {url!r}: has no host")
    if scheme == "http" and not allow_http:
        raise WeightsError(
            f"weights URL {url!r}: plain http is refused (the file could be swapped in "
            "transit); use https:// or file://, or allow_http=True / --allow-http for a "
            "trusted local mirror"
        )
    return scheme


def _prepare_dir(directory: Path) -> None:
    """Create the destination directory and check that we may write there."""
    advice = f"choose a writable directory (--dest or ${settings.MODEL_DIR_ENV})"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"weights directory {directory} cannot be created ({exc.strerror or exc}); {advice}"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise WeightsError(f"weights directory {directory} is not writable; {advice}")


@contextlib.contextmanager
def _locked(dest: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``dest``'s lock file (waits at most ``timeout_s``)."""
    path = lock_path(dest)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WeightsError(
            f"weights directory {dest.parent} is not writable ({exc.strerror or exc}); choose "
            f"a writable directory (--dest or ${settings.MODEL_DIR_ENV})"
        ) from exc
    try:
        deadline = time.monotonic() + timeout_s
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WeightsError(
                        f"gave up after {timeout_s:g} s waiting for another process that "
                        f"holds {path} (downloading {dest.name}); retry later or remove a "
                        "stuck process"
                    ) from None
                if not waiting:
                    log.info("waiting for another process downloading %s", dest)
                    waiting = True
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _is_usable(path: Path, expected: str | None) -> bool:
    """Whether an existing file may be used: it is a file and matches ``expected`` if set."""
    if not path.is_file():
        raise WeightsError(f"{path} exists but is not a regular file; move it away")
    return expected is None or sha256_of(path) == expected


def _move_aside(path: Path) -> Path:
    """Rename a rejected file next to itself, never deleting what a user put there."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.mismatch-{stamp}")
    os.replace(path, aside)
    return aside


# ---------------------------------------------------------------- HTTP


def _open(
    session: requests.Session, url: str, headers: dict[str, str], policy: DownloadPolicy
) -> requests.Response:
    """GET ``url`` following at most ``_MAX_REDIRECTS`` redirects, each to https only."""
    current = url
    for _ in range(_MAX_REDIRECTS + 1):
        response = session.get(
            current,
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=(policy.connect_timeout_s, policy.read_timeout_s),
        )
        if response.status_code not in _REDIRECT_CODES:
            return response
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise WeightsError(f"HTTP {response.status_code} from {current} has no Location")
        target = urljoin(current, location)
        if urlsplit(target).scheme.lower() != "https":
            raise WeightsError(
                f"refused redirect from {current} to {target}: redirects are only followed "
                f"to https:// URLs (downloading {url})"
            )
        current = target
    raise WeightsError(f"more than {_MAX_REDIRECTS} redirects from {url}")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _validator(response: requests.Response) -> str | None:
    """A validator ``If-Range`` accepts: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _checked_content_range(response: requests.Response, offset: int) -> int | None:
    """Total size from a 206's ``Content-Range``; ``_Transient`` when it does not fit."""
    header = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    problem = None
    if match is None:
        problem = f"unparseable Content-Range {header!r}"
    else:
        start, end = int(match[1]), int(match[2])
        total = None if match[3] == "*" else int(match[3])
        length = _content_length(response)
        if start != offset:
            problem = f"Content-Range {header!r} does not start at the requested byte {offset}"
        elif end < start or (total is not None and end != total - 1):
            problem = f"Content-Range {header!r} is not the rest of the file"
        elif length is not None and length != end - start + 1:
            problem = f"Content-Length {length} disagrees with Content-Range {header!r}"
        else:
            return total
    raise _Transient(f"{problem}; starting over")


def _attempt(session: requests.Session, url: str, dest: Path, policy: DownloadPolicy) -> None:
    """One GET that leaves ``.part`` holding the whole file, or raises."""
    part, meta_path = part_path(dest), _meta_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    meta: dict[str, Any] = {}
    if offset:
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(meta_path.read_text())
        if meta.get("url") != url:  # a leftover of another URL (or of unknown origin)
            _discard(part, meta_path)
            offset = 0
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    try:
        response = _open(session, url, headers, policy)
    except requests.exceptions.SSLError as exc:
        raise WeightsError(f"TLS error for {url}: {exc}") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with response:
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status} {response.reason}", _retry_after(response))
        if status == 416 or (status == 206 and not offset):
            _discard(part, meta_path)
            raise _Transient(f"HTTP {status} does not fit the saved part; starting over")
        if status not in (200, 206):
            raise WeightsError(f"HTTP {status} {response.reason} for {response.url}")
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        if status == 206:
            try:
                total = _checked_content_range(response, offset)
            except _Transient:
                _discard(part, meta_path)
                raise
            mode = "ab"
        else:  # 200: the whole file, also when the server ignored our Range
            total, offset, mode = (None if encoded else _content_length(response)), 0, "wb"
        meta_path.write_text(json.dumps({"url": url, "validator": _validator(response)}))
        _stream(response, part, mode, offset, total, policy)


def _progress_bar(
    part: Path, total: int | None, policy: DownloadPolicy, initial: int = 0
) -> tqdm:
    """Byte progress on stderr (silent with ``policy.quiet``), shared by HTTP and file copies."""
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name,
        disable=policy.quiet,
        file=sys.stderr,
        mininterval=1.0,
    )


def _stream(
    response: requests.Response,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    policy: DownloadPolicy,
) -> None:
    """Append the body to ``part`` (fsynced) and check its length against ``total``."""
    size = offset
    bar = _progress_bar(part, total, policy, initial=offset)
    with bar, open(part, mode) as fh:
        try:
            for chunk in response.iter_content(policy.chunk_bytes):
                fh.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
                if total is not None and size > total:
                    raise _Transient(f"body longer than the announced {total} bytes")
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise _Transient(f"{type(exc).__name__} after {size} bytes: {exc}") from exc
        finally:
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and size != total:
        raise _Transient(f"got {size} bytes, the server announced {total}")


def _fetch_http(url: str, dest: Path, policy: DownloadPolicy) -> None:
    """Fill ``.part`` with the whole file, retrying transient failures within the policy."""
    with requests.Session() as session:
        session.headers["Accept-Encoding"] = "identity"  # lengths and ranges of the raw file
        session.headers["User-Agent"] = f"{settings.APP_SLUG}/{settings.APP_VERSION}"
        for attempt in range(1, policy.attempts + 1):
            try:
                _attempt(session, url, dest, policy)
                return
            except _Transient as exc:
                if attempt == policy.attempts:
                    reason = exc.reason
                    break
                delay = policy.delay_s(attempt, exc.retry_after)
                log.warning(
                    "download attempt %d/%d of %s failed (%s); retrying in %.2f s",
                    attempt,
                    policy.attempts,
                    url,
                    exc.reason,
                    delay,
                )
                time.sleep(delay)
    part = part_path(dest)
    kept = part.exists() and part.stat().st_size > 0
    note = f"; the partial file {part} is kept and the next run resumes it" if kept else ""
    raise _ResumableError(
        f"could not download {url} after {policy.attempts} attempts (last: {reason}){note}; "
        f"{_by_hand(dest)}"
    )


# ---------------------------------------------------------------- file://


def _copy_file(url: str, dest: Path, policy: DownloadPolicy) -> None:
    """Copy a ``file://`` URL to ``.part`` (fsynced), like a download."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise WeightsError(f"weights URL {url!r}: file:// URLs must be local (no host)")
    source = Path(url2pathname(parts.path))
    if not source.is_file():
        raise WeightsError(f"weights URL {url}: {source} is not a file; {_by_hand(dest)}")
    total = source.stat().st_size
    part = part_path(dest)
    with (
        open(source, "rb") as src,
        open(part, "wb") as fh,
        _progress_bar(part, total, policy) as bar,
    ):
        while chunk := src.read(policy.chunk_bytes):
            fh.write(chunk)
            bar.update(len(chunk))
        fh.flush()
        os.fsync(fh.fileno())
    if part.stat().st_size != total:
        raise WeightsError(f"{source} changed while it was copied; try again")


# ---------------------------------------------------------------- public API


def download_weights(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    policy: DownloadPolicy | None = None,
) -> Path:
    """Make ``dest`` hold the file of ``url`` (verified against ``sha256`` when given).

    An existing ``dest`` that matches (or any existing ``dest`` when no sha256 is given) is
    used as is. See the module docstring for the guarantees.
    """
    policy = policy or DownloadPolicy()
    dest = Path(dest)
    expected = normalize_sha256(sha256)
    scheme = _check_url(url, policy.allow_http)
    _prepare_dir(dest.parent)
    part, meta = part_path(dest), _meta_path(dest)
    with _locked(dest, policy.lock_timeout_s):
        if dest.exists() or dest.is_symlink():
            if _is_usable(dest, expected):
                return dest
            aside = _move_aside(dest)
            log.warning(
                "%s does not match sha256 %s; moved it to %s and downloading again",
                dest,
                expected,
                aside,
            )
        rounds = 1 if scheme == "file" else _MISMATCH_DOWNLOADS
        try:
            for round_ in range(1, rounds + 1):
                if scheme == "file":
                    _copy_file(url, dest, policy)
                else:
                    _fetch_http(url, dest, policy)
                actual = sha256_of(part)
                if expected is None or actual == expected:
                    break
                _discard(part, meta)
                if round_ < rounds:
                    log.warning(
                        "checksum mismatch for %s (expected %s, got %s); downloading "
                        "once more from zero",
                        url,
                        expected,
                        actual,
                    )
            else:
                raise WeightsError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
                    f"nothing was saved at {dest}; {_by_hand(dest)}"
                )
            os.replace(part, dest)
            _fsync_dir(dest.parent)
            _discard(meta)
        except _ResumableError:
            if not (part.exists() and part.stat().st_size > 0):
                _discard(part, meta)
            raise
        except WeightsError:
            _discard(part, meta)
            raise
        except OSError as exc:  # disk full, permissions changed under us...
            _discard(part, meta)
            raise WeightsError(f"could not write the weights to {dest.parent}: {exc}") from exc
    if expected is None:
        log.info("saved %s (sha256 %s; pin it as weights_sha256 to verify)", dest, actual)
    return dest


def resolve_weights(
    model_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None | EllipsisType = ...,
    policy: DownloadPolicy | None = None,
) -> Path:
    """The weights file to load: model_dir, then ``$<PKG>_WEIGHTS``, then a download.

    ``url``/``sha256`` default to ``settings.WEIGHTS_URL``/``settings.WEIGHTS_SHA256``
    (``sha256=None`` skips the check). A model_dir file that fails the check is skipped (and
    moved aside if a download replaces it).
    """
    directory = Path(model_dir) if model_dir is not None else default_model_dir()
    expected = normalize_sha256(settings.WEIGHTS_SHA256 if sha256 is ... else sha256)
    local = directory / settings.WEIGHTS_FILENAME
    if local.is_file():
        if _is_usable(local, expected):
            return local
        log.warning("%s does not match sha256 %s; not using it", local, expected)
    override = os.environ.get(settings.WEIGHTS_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"${settings.WEIGHTS_ENV} is {override!r}, which is not a file; fix it, or "
                f"unset it to download the weights into {directory}"
            )
        return path
    return download_weights(url or settings.WEIGHTS_URL, local, expected, policy)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors.

    Weights-only loading rebuilds tensors and plain containers and never calls anything a
    pickle names, so a checkpoint carrying code is refused before any of it runs.
    """
    import torch  # here, so the download CLI does not need to import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} is not a file; {_by_hand(path)}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        unsafe = re.search(r"GLOBAL\s+([\w.]+)", text)
        if unsafe:
            raise WeightsError(
                f"refused for safety: checkpoint {path} refers to {unsafe[1]}, which could run "
                "code when unpickled; checkpoints are loaded weights-only "
                "(torch.load(weights_only=True) rebuilds only tensors and plain containers), "
                "so nothing in it was run. If you trust the file, re-save its tensors as a "
                "plain state_dict"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint that weights-only loading can read (corrupt, "
            f"truncated or another format): {detail[1] if detail else text.splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch reports bad files as RuntimeError, EOFError, KeyError...
        first = (str(exc).splitlines() or [""])[0]
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another "
            f"format): {type(exc).__name__}: {first}"
        ) from exc
    if not isinstance(loaded, dict):
        raise WeightsError(
            f"checkpoint {path} holds a {type(loaded).__name__}; expected a dict "
            "(a state_dict or a dict holding one)"
        )
    return loaded


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {settings.PACKAGE}.weights",
        description=f"Download and verify the {settings.MODEL_NAME} weights into a directory "
        "(the Docker image runs this at build time). Prints the file's path.",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="directory to put the weights in (default: "
        f"${settings.MODEL_DIR_ENV}, /weights or ~/.cache/{settings.APP_SLUG})",
    )
    parser.add_argument(
        "--url", default=None, help=f"download from this URL (default: {settings.WEIGHTS_URL})"
    )
    parser.add_argument(
        "--sha256",
        default=None,
        help="expected sha256 (default: the template's weights_sha256 when "
        "--url is not given; empty to skip)",
    )
    parser.add_argument(
        "--if-required", action="store_true", help="do nothing when the model needs no weights file"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    parser.add_argument(
        "--allow-http",
        action="store_true",
        help="accept a plain http:// URL (tests, trusted local mirrors)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=DownloadPolicy.attempts,
        help="attempts in all (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=DownloadPolicy.backoff_s,
        help="first retry delay in seconds, doubled each time (default: %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DownloadPolicy.read_timeout_s,
        help="seconds a read may wait for data (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI body: 0 on success, 1 with one ``error:`` line on stderr on failure."""
    args = _parser().parse_args(argv)
    try:
        if args.if_required:
            from . import model  # here: model.py may import this module

            if not model.WEIGHTS_REQUIRED:
                if not args.quiet:
                    print(
                        f"{settings.MODEL_NAME} needs no weights file; nothing to download",
                        file=sys.stderr,
                    )
                return 0
        sha256 = args.sha256 if args.sha256 is not None or args.url else settings.WEIGHTS_SHA256
        policy = DownloadPolicy(
            attempts=args.attempts,
            backoff_s=args.backoff,
            max_backoff_s=max(DownloadPolicy.max_backoff_s, args.backoff),
            read_timeout_s=args.read_timeout,
            allow_http=args.allow_http,
            quiet=args.quiet,
        )
        dest_dir = args.dest if args.dest is not None else default_model_dir()
        path = download_weights(
            args.url or settings.WEIGHTS_URL, dest_dir / settings.WEIGHTS_FILENAME, sha256, policy
        )
    except (WeightsError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cli() -> int:
    """``python -m`` entry: log notes to stderr (none with ``--quiet``), then ``main``."""
    quiet = "--quiet" in sys.argv[1:]
    logging.basicConfig(
        level=logging.ERROR + 10 if quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    return main()


if __name__ == "__main__":
    from . import weights as _module  # the importable copy, so its WeightsError is the one

    raise SystemExit(_module._cli())
