"""The runtime's one HTTP layer: the policy (timeouts, attempts, backoff), its urllib3 ``Retry``
and the ``requests`` session, shared by the platform client and the weight downloads.

requests and urllib3 do the work: connection pooling, proxies from the environment, which
errors and statuses count as transient, the retry counters, exponential backoff and
``Retry-After``. What they cannot do is retry a failure in the middle of a body (requests'
adapter reads only the status line and headers under its ``Retry``); the two users charge
such a failure to the same ``Retry`` object (``Retry.increment``) and wait with ``pause``, so
one budget covers every kind of failure. (Named ``transport``, not ``http``, so that it can
never shadow the standard library's ``http``.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

__all__ = [
    "DOWNLOAD_POLICY",
    "RETRY_STATUSES",
    "HttpPolicy",
    "cause_of",
    "is_loopback",
    "new_session",
    "pause",
    "safe_http",
]

# Statuses worth another attempt: the request timed out, was rate-limited, or the server
# failed; every other 4xx is final.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


class _Retry(Retry):
    """urllib3's ``Retry`` honouring ``Retry-After`` only on 429/503, which prove the request
    was refused; urllib3 would also retry a 413 that carries one."""

    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})


@dataclass(frozen=True)
class HttpPolicy:
    """How long one HTTP call (or one download) may take, and how it retries.

    The defaults are the platform client's: 3 attempts (an immediate second one rides out a
    dropped keep-alive connection or one 502 of a restarting upstream, a third after 1 s a
    short blip; more would only delay telling the user); urllib3's backoff with factor
    0.5 s (waits 0 s, 1 s, 2 s, ..., at most 4 s; a 429/503's ``Retry-After`` is honoured up
    to that cap); connect 5 s (the platform sits on the agent's network: a connect that slow
    means it is down); read 30 s (``videos.download-frame`` decodes the frame on the
    server, a cold seek into a long 4K video takes seconds). Worst case of a platform call:
    3 x 35 s + 2 x 4 s = 113 s. Weight downloads use ``DOWNLOAD_POLICY``.

    ``lock_timeout_s`` (waiting for another process downloading the same file) and ``quiet``
    (no progress bar) matter to downloads only.
    """

    attempts: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 4.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    lock_timeout_s: float = 3600.0
    chunk_bytes: int = 256 * 1024
    quiet: bool = False
    user_agent: str | None = None  # None: requests' own

    def __post_init__(self) -> None:
        rules = [
            ("attempts", isinstance(self.attempts, int) and 1 <= self.attempts <= 20, "1 to 20"),
            ("backoff_s", 0 <= self.backoff_s <= 600, "0 to 600"),
            ("backoff_max_s", self.backoff_s <= self.backoff_max_s <= 600, "backoff_s to 600"),
            ("connect_timeout_s", 0 < self.connect_timeout_s <= 600, "in (0, 600]"),
            ("read_timeout_s", 0 < self.read_timeout_s <= 600, "in (0, 600]"),
            ("lock_timeout_s", 0 < self.lock_timeout_s <= 86400, "in (0, 86400]"),
            ("chunk_bytes", 1 <= self.chunk_bytes <= 64 * 1024 * 1024, "1 to 64 MiB"),
        ]
        for name, ok, rule in rules:
            if not ok:  # NaN fails every comparison, so it lands here too
                raise ValueError(f"HttpPolicy.{name}: {getattr(self, name)!r} must be {rule}")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, prefix: str = "SLY_VOS_PLATFORM_"
    ) -> HttpPolicy:
        """The defaults, overridden by ``<prefix>ATTEMPTS``, ``_BACKOFF_S``,
        ``_BACKOFF_MAX_S``, ``_CONNECT_TIMEOUT_S`` and ``_READ_TIMEOUT_S`` (an agent on a
        slow network, or tests that need short bounds). A bad value names the variable."""
        values: dict[str, Any] = {}
        for name, kind in ENV_FIELDS.items():
            key = f"{prefix}{name.upper()}"
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} must be a {kind.__name__}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{prefix}*: {exc}") from None

    def env(self, prefix: str = "SLY_VOS_PLATFORM_") -> dict[str, str]:
        """The variables ``from_env`` reads back as this policy (for a child process)."""
        return {f"{prefix}{name.upper()}": str(getattr(self, name)) for name in ENV_FIELDS}

    @property
    def timeout(self) -> tuple[float, float]:
        """requests' ``timeout``: (connect, each read)."""
        return (self.connect_timeout_s, self.read_timeout_s)

    @property
    def attempt_s(self) -> float:
        """One attempt whose whole answer is read under a deadline ends this long after it
        started."""
        return self.connect_timeout_s + self.read_timeout_s

    def wait_s(self, failures: int) -> float:
        """Longest wait after ``failures`` consecutive failed attempts: urllib3's backoff
        (none after the first, then ``backoff_s * 2**(failures - 1)``, capped), or the
        ``Retry-After`` of a 429/503 up to the same cap."""
        backoff = 0.0
        if failures > 1:
            backoff = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1))
        return max(backoff, self.backoff_max_s)

    def worst_case_s(self) -> float:
        """Upper bound of one call's wall time (all attempts, waits and timeouts) when each
        answer is read under ``attempt_s``.

        Not counted: name resolution (the OS resolver has its own timeouts), a server that
        trickles its status line and headers a byte at a time (each read is limited, not
        their sum), uploads it stops reading (limited per write by ``connect_timeout_s``).
        """
        waits = sum(self.wait_s(n) for n in range(1, self.attempts))
        return self.attempts * self.attempt_s + waits

    def retry(
        self,
        methods: Collection[str] = frozenset({"GET"}),
        statuses: Collection[int] = RETRY_STATUSES,
        *,
        idempotent: bool = True,
    ) -> Retry:
        """The ``Retry`` state one call starts with.

        ``other=0``: TLS and unexpected errors fail at once (a retry cannot fix them);
        ``redirect=0``: the callers judge redirects; ``raise_on_status=False``: the last
        retried status comes back as a response, to be named. Not ``idempotent``: a read
        error (timeout or connection lost after the request went out) is final, the server
        may have applied the request; connect errors prove it did not.
        """
        return _Retry(
            total=self.attempts - 1,
            read=None if idempotent else False,
            redirect=0,
            other=0,
            allowed_methods=frozenset(methods),
            status_forcelist=frozenset(statuses),
            backoff_factor=self.backoff_s,
            backoff_max=self.backoff_max_s,
            retry_after_max=self.backoff_max_s,  # type: ignore[arg-type]
            raise_on_status=False,
        )


ENV_FIELDS: dict[str, type] = {
    "attempts": int,
    "backoff_s": float,
    "backoff_max_s": float,
    "connect_timeout_s": float,
    "read_timeout_s": float,
}

# A large file over the internet: more attempts, longer waits and timeouts.
DOWNLOAD_POLICY = HttpPolicy(
    attempts=5, backoff_s=1.0, backoff_max_s=30.0, connect_timeout_s=15.0, read_timeout_s=60.0
)


def new_session(
    policy: HttpPolicy, retry: Retry | None = None, *, pool_maxsize: int = 8
) -> requests.Session:
    """A session with one pooled adapter per scheme retrying under ``retry`` (none: no
    retries, a read error is raised at once); the policy's user agent when it has one."""
    session = requests.Session()
    if policy.user_agent:
        session.headers["User-Agent"] = policy.user_agent
    adapter = HTTPAdapter(
        pool_connections=1,
        pool_maxsize=pool_maxsize,
        max_retries=retry if retry is not None else Retry(0, read=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def pause(retry: Retry, policy: HttpPolicy, raw: Any = None) -> None:
    """Wait before the next attempt: urllib3's backoff, or the ``Retry-After`` of a 429/503
    answer (``raw``, the urllib3 response) up to ``policy.backoff_max_s``."""
    wait = retry.get_backoff_time()
    if raw is not None and raw.status in _Retry.RETRY_AFTER_STATUS_CODES:
        try:
            after = retry.get_retry_after(raw)
        except InvalidHeader:  # neither seconds nor an HTTP date
            after = None
        if after:
            wait = min(after, policy.backoff_max_s)
    if wait > 0:
        time.sleep(wait)


def cause_of(exc: BaseException) -> BaseException | None:
    """The urllib3 error under a requests exception (what ``Retry.increment`` classifies);
    a bare socket error counts as a lost connection."""
    if isinstance(exc, Urllib3Error):
        cause: Any = exc
    else:
        cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    if isinstance(cause, Urllib3Error):
        return cause
    if isinstance(cause, OSError):
        return ProtocolError("Connection aborted.", cause)
    return None


def is_loopback(host: str | None) -> bool:
    """``urlsplit``'s (lower-case, unbracketed) host never leaves this machine."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host or "").is_loopback
    return host == "localhost"


def safe_http(url: str, loopback_http: bool) -> bool:
    """https with a host, or (when ``loopback_http``) plain http to a loopback host: elsewhere
    plain http lets whatever sits in between swap the answer."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http":
        return loopback_http and is_loopback(parts.hostname)
    return scheme == "https" and bool(parts.hostname)
