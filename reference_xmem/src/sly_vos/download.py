"""Download one file and verify it: resumable, locked against a second process, atomic.

Used for the weights (``weights.resolve_weights``, ``python -m sly_vos.weights``) and the
URL files of named checkpoints (``checkpoints.fetch``); the HTTP layer (policy, retries,
session) is ``transport``'s, the sha256 rule ``checksums``'.

What a download guarantees (``download_weights``):

* The destination path only ever holds a complete file: bytes stream to ``<name>.part`` in the
  same directory, are fsynced, checked (sha256 when given) and renamed with ``os.replace``;
  the directory is fsynced after the rename.
* Transient failures (connection errors, timeouts, HTTP 408, 429 and 5xx, a body cut short)
  share one budget of ``policy.attempts`` requests (``transport.DOWNLOAD_POLICY`` unless
  given), kept by one urllib3 ``Retry``: urllib3 retries
  statuses and connection errors itself, and each failed body is charged to the same object
  (the one download repeated after a checksum mismatch, below, gets a fresh budget).
  Backoff is exponential from the second retry on, capped at ``policy.backoff_max_s``;
  ``Retry-After`` is honoured within that cap. Every socket read has a timeout
  (``policy.read_timeout_s``).
* A retry resumes with ``Range`` (and ``If-Range`` when the server gave a strong ETag or a
  Last-Modified date) and checks ``Content-Range``; a server that answers 200, 416 or an
  inconsistent ``Content-Range`` gets a restart from zero instead. The partial file is kept
  only for the URL it came from (recorded in ``<name>.part.json``).
* A body longer than its ``Content-Length`` cannot be seen by an HTTP/1.1 client (it stops
  at the announced length); it shows up as a checksum mismatch. After a mismatch the file is
  downloaded once more from zero; a second mismatch is an error. Pin ``weights_sha256`` to
  get this protection.
* Two processes downloading the same file serialise on ``.<name>.lock`` (``filelock``, an
  ``flock``): one downloads, the other waits (at most ``policy.lock_timeout_s``) and then
  uses the verified file. The lock file stays (removing a flock file while others wait races).

Decisions (documented for users of the template):

* Accepted URLs: ``https://``, ``file://`` (local) and plain ``http://`` only to a loopback
  host (127.0.0.0/8, ``localhost``, ``[::1]``): elsewhere the file could be swapped in
  transit. Every redirect must land on ``https://``, or on loopback ``http://`` when the URL
  itself is loopback ``http://``. Both are checked before any connection to that URL.
* A file already at the destination whose sha256 differs from the expected one is never used
  and never deleted: it is moved aside to ``<name>.mismatch-<UTC time>``, then downloaded anew.
* When all attempts fail on transient errors, a non-empty ``.part`` is kept so that the next
  run resumes it (the error says so); any other failure removes it.

Errors are ``WeightsError``, deliberately not a ``RuntimeError``: the SDK retries
``load_on_device`` on CPU after a ``RuntimeError``, which would only repeat the failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import filelock
import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from .checksums import normalize_sha256
from .transport import DOWNLOAD_POLICY, RETRY_STATUSES, HttpPolicy, new_session, pause, safe_http

log = logging.getLogger(__name__)

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_MAX_REDIRECTS = 5


class WeightsError(Exception):
    """The weights file could not be found, downloaded, verified or loaded.

    Not a ``RuntimeError`` on purpose (see the module docstring).
    """


class _ResumableError(WeightsError):
    """All attempts failed on transient errors; a non-empty ``.part`` is kept for a later run."""


class _Transient(Exception):
    """A body failed in a way a later attempt (charged to the retry budget) may fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- files and URLs


def part_path(dest: Path) -> Path:
    """Where the download of ``dest`` is streamed to (and kept for resuming)."""
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    """The lock file that serialises downloads of ``dest``."""
    return dest.with_name(f".{dest.name}.lock")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def expected_sha256(value: str | None) -> str | None:
    """``checksums.normalize_sha256`` (the one rule, shared with the settings and the
    template), its error as a ``WeightsError``."""
    try:
        return normalize_sha256(value)
    except ValueError as exc:
        raise WeightsError(str(exc)) from None


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (``hashlib.file_digest`` is Python 3.11+)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(dest: Path) -> str:
    return f"to place the file by hand, put it at {dest}"


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


def _check_url(url: str) -> None:
    """Refuse, before any connection, a URL we do not download from."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise WeightsError(f"weights URL {url!r}: file:// URLs must be local (no host)")
    elif not safe_http(url, loopback_http=True):
        raise WeightsError(
            f"weights URL {url!r} refused: use https://, file:// or http:// to a loopback host "
            "(127.0.0.0/8, localhost, [::1]); over plain http elsewhere the file could be "
            "swapped in transit"
        )


def _check_redirect(url: str, current: str, target: str) -> None:
    """Refuse a redirect off https (off loopback http, when ``url`` is loopback http)."""
    if not safe_http(target, loopback_http=urlsplit(url).scheme.lower() == "http"):
        raise WeightsError(
            f"refused redirect from {current} to {target} (downloading {url}): redirects must "
            "land on https://, or on loopback http:// when the weights URL is loopback http://"
        )


def _prepare_dir(directory: Path) -> None:
    """Create the destination directory and check that we may write there."""
    advice = "choose a writable directory (--dest, or the app's <PREFIX>_MODEL_DIR)"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"weights directory {directory} cannot be created ({exc.strerror or exc}); {advice}"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise WeightsError(f"weights directory {directory} is not writable; {advice}")


def _acquire(dest: Path, timeout_s: float) -> filelock.BaseFileLock:
    """Take ``dest``'s cross-process lock, waiting at most ``timeout_s`` (and saying so)."""
    lock = filelock.FileLock(lock_path(dest), timeout=timeout_s)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("waiting for another process downloading %s", dest)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise WeightsError(
                f"gave up after {timeout_s:g} s waiting for another process that holds "
                f"{lock_path(dest)} (downloading {dest.name}); retry later or stop that process"
            ) from None
    return lock


def is_usable(path: Path, expected: str | None) -> bool:
    """Whether an existing file may be used: it is a file and matches ``expected`` if set."""
    if not path.is_file():
        raise WeightsError(f"{path} exists but is not a regular file; move it away")
    return expected is None or sha256_of(path) == expected


def _move_aside(path: Path) -> Path:
    """Rename a rejected file next to itself, never deleting what a user put there."""
    aside = path.with_name(f"{path.name}.mismatch-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
    os.replace(path, aside)
    return aside


@contextlib.contextmanager
def _writer(part: Path, mode: str, total: int | None, offset: int, quiet: bool) -> Iterator[IO]:
    """``part`` open for writing, fsynced however the writing ends; progress on stderr."""
    with open(part, mode) as fh:
        try:
            bar = {"desc": part.name, "disable": quiet, "file": sys.stderr, "mininterval": 1.0}
            with tqdm.wrapattr(fh, "write", total=total, initial=offset, **bar) as out:
                yield out
        finally:
            fh.flush()
            os.fsync(fh.fileno())


# ---------------------------------------------------------------- HTTP


def _session(policy: HttpPolicy) -> requests.Session:
    """A session whose adapter is handed the current retry budget before each GET (``_get``)."""
    session = new_session(policy, pool_maxsize=1)
    session.headers["Accept-Encoding"] = "identity"  # lengths and ranges of the file itself
    return session


def _get(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    retry: Retry,
    policy: HttpPolicy,
) -> requests.Response:
    """GET ``url``, each redirect checked before it is followed; the budget travels along."""
    current = url
    for _ in range(_MAX_REDIRECTS + 1):
        adapter = session.get_adapter(current)
        assert isinstance(adapter, HTTPAdapter)
        adapter.max_retries = retry
        response = session.get(
            current, headers=headers, stream=True, allow_redirects=False, timeout=policy.timeout
        )
        if not response.is_redirect:
            return response
        retry = response.raw.retries
        target = urljoin(current, response.headers["Location"])
        response.close()
        _check_redirect(url, current, target)
        current = target
    raise WeightsError(f"more than {_MAX_REDIRECTS} redirects from {url}")


def _resume_point(url: str, dest: Path) -> tuple[int, dict[str, str]]:
    """Offset and Range/If-Range headers to resume a ``.part`` an earlier attempt at ``url``
    left; (0, {}) after discarding any other leftover (another URL's, or of unknown origin)."""
    part, meta = part_path(dest), _meta_path(dest)
    size = part.stat().st_size if part.is_file() else 0
    try:
        saved = json.loads(meta.read_text()) if size else None
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict) or saved.get("url") != url:
        _discard(part, meta)
        return 0, {}
    headers = {"Range": f"bytes={size}-"}
    if saved.get("validator"):
        headers["If-Range"] = saved["validator"]
    return size, headers


def _header_int(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _range_total(response: requests.Response, offset: int) -> int | None:
    """The file size a 206 announces; ``_Transient`` unless it sends our rest of the file."""
    header = response.headers.get("Content-Range", "").strip()
    if match := _CONTENT_RANGE_RE.fullmatch(header):
        start, end = int(match[1]), int(match[2])
        total = None if match[3] == "*" else int(match[3])
        length = _header_int(response, "Content-Length")
        if (
            start == offset
            and end >= start
            and total in (None, end + 1)
            and length in (None, end - start + 1)
        ):
            return total
    raise _Transient(f"Content-Range {header!r} is not bytes {offset}- of the file; restarting")


def _exhausted(url: str, dest: Path, policy: HttpPolicy, reason: str) -> _ResumableError:
    part = part_path(dest)
    kept = part.is_file() and part.stat().st_size > 0
    note = f"; the partial file {part} is kept and the next run resumes it" if kept else ""
    return _ResumableError(
        f"could not download {url} after {policy.attempts} attempts (last: {reason}){note}; "
        f"{_by_hand(dest)}"
    )


def _save_body(
    response: requests.Response, url: str, dest: Path, offset: int, policy: HttpPolicy
) -> None:
    """Judge the status, then append (206) or write (200) the body to ``.part``."""
    part, meta = part_path(dest), _meta_path(dest)
    status = response.status_code
    if status in RETRY_STATUSES:  # urllib3 retried it until the budget ran out
        raise _exhausted(url, dest, policy, f"HTTP {status} {response.reason}")
    if status not in (200, 206, 416):
        raise WeightsError(f"HTTP {status} {response.reason} for {response.url}")
    try:
        if status == 416:
            raise _Transient("HTTP 416: the saved part does not fit the file; restarting")
        total = _range_total(response, offset) if status == 206 else None
    except _Transient:
        _discard(part, meta)
        raise
    if status == 200:  # the whole file, also when the server ignored our Range
        offset, total = 0, _header_int(response, "Content-Length")
    meta.write_text(json.dumps({"url": url, "validator": _validator(response)}))
    with _writer(part, "ab" if status == 206 else "wb", total, offset, policy.quiet) as out:
        try:
            for chunk in response.iter_content(policy.chunk_bytes):
                out.write(chunk)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _validator(response: requests.Response) -> str | None:
    """A validator ``If-Range`` accepts: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")


def _reason(exc: Exception) -> str:
    """What urllib3 last saw, from a requests exception that wraps its ``MaxRetryError``."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    cause = inner.reason if isinstance(inner, MaxRetryError) and inner.reason else inner
    return f"{type(cause).__name__}: {cause}"


def _fetch_http(url: str, dest: Path, policy: HttpPolicy) -> None:
    """Fill ``.part`` with the whole file; each failed body is charged to urllib3's budget."""
    retry = policy.retry()  # GET, RETRY_STATUSES
    with _session(policy) as session:
        while True:
            offset, headers = _resume_point(url, dest)
            try:
                response = _get(session, url, headers, retry, policy)
            except requests.exceptions.SSLError as exc:
                raise WeightsError(f"TLS error for {url}: {exc}") from exc
            except (requests.ConnectionError, requests.Timeout) as exc:  # the budget is spent
                raise _exhausted(url, dest, policy, _reason(exc)) from exc
            with response:
                try:
                    return _save_body(response, url, dest, offset, policy)
                except _Transient as exc:
                    reason = exc.reason
            try:
                retry = response.raw.retries.increment("GET", url, error=ProtocolError(reason))
            except MaxRetryError:
                raise _exhausted(url, dest, policy, reason) from None
            failed = len(retry.history)
            log.warning(
                "attempt %d/%d at %s failed (%s); retrying", failed, policy.attempts, url, reason
            )
            pause(retry, policy)


def _copy_file(url: str, dest: Path, policy: HttpPolicy) -> None:
    """Copy a ``file://`` URL to ``.part`` (fsynced), like a download."""
    source = Path(url2pathname(urlsplit(url).path))
    if not source.is_file():
        raise WeightsError(f"weights URL {url}: {source} is not a file; {_by_hand(dest)}")
    size = source.stat().st_size
    with open(source, "rb") as src, _writer(part_path(dest), "wb", size, 0, policy.quiet) as out:
        shutil.copyfileobj(src, out, policy.chunk_bytes)


def _fetch_verified(url: str, dest: Path, expected: str | None, policy: HttpPolicy) -> str:
    """Fill ``.part`` and return its sha256; a mismatch gets one more download from zero."""
    is_file = urlsplit(url).scheme.lower() == "file"
    rounds = 1 if is_file else 2  # a copied file would only mismatch again
    for round_ in range(1, rounds + 1):
        (_copy_file if is_file else _fetch_http)(url, dest, policy)
        actual = sha256_of(part_path(dest))
        if expected is None or actual == expected:
            return actual
        _discard(part_path(dest), _meta_path(dest))
        if round_ < rounds:
            log.warning("checksum mismatch for %s (got %s); downloading once more", url, actual)
    raise WeightsError(
        f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
        f"nothing was saved at {dest}; {_by_hand(dest)}"
    )


# ---------------------------------------------------------------- public API


def download_weights(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    policy: HttpPolicy | None = None,
) -> Path:
    """Make ``dest`` hold the file of ``url`` (verified against ``sha256`` when given).

    An existing ``dest`` that matches (or any existing ``dest`` when no sha256 is given) is
    used as is. See the module docstring for the guarantees.
    """
    policy = policy or DOWNLOAD_POLICY
    dest = Path(dest)
    expected = expected_sha256(sha256)
    _check_url(url)
    _prepare_dir(dest.parent)
    part, meta = part_path(dest), _meta_path(dest)
    with _acquire(dest, policy.lock_timeout_s):
        if dest.exists() or dest.is_symlink():
            if is_usable(dest, expected):
                return dest
            aside = _move_aside(dest)
            log.warning("%s does not match sha256 %s; moved it to %s", dest, expected, aside)
        try:
            actual = _fetch_verified(url, dest, expected, policy)
            os.replace(part, dest)
            _fsync_dir(dest.parent)
            _discard(meta)
        except _ResumableError:
            if not (part.is_file() and part.stat().st_size > 0):
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
