"""The weight-download hook against real, misbehaving HTTP servers on the loopback interface.

Run once for the runtime (the per-app suite checks only an app's own settings). Statuses,
headers, ranges and redirects come from ``pytest-httpserver``; broken bodies (drops, wrong
lengths, drips) from ``sly_vos.testing.faults.FaultServer``. Each protection of
``sly_vos.weights`` has a test here that fails without it. Timeouts and backoffs are tiny.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from pytest_httpserver import HTTPServer
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wrappers import Request, Response

from sly_vos.settings import AppSettings
from sly_vos.testing.faults import FaultServer
from sly_vos.transport import HttpPolicy
from sly_vos.weights import (
    WeightsError,
    download_weights,
    load_checkpoint,
    lock_path,
    part_path,
    resolve_weights,
    sha256_of,
)

pytestmark = pytest.mark.timeout(120)  # fault tests are also marked ``reliability``

PAYLOAD = random.Random(7).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
OTHER_DIGEST = hashlib.sha256(b"another file").hexdigest()
RUNTIME = Path(__file__).resolve().parents[1]
FILENAME = "fake.pth"


def fast(**overrides: object) -> HttpPolicy:
    """A policy for loopback tests: few attempts, millisecond backoff, short timeouts."""
    options: dict[str, object] = dict(
        attempts=4,
        backoff_s=0.01,
        backoff_max_s=0.05,
        connect_timeout_s=2.0,
        read_timeout_s=2.0,
        lock_timeout_s=30.0,
        chunk_bytes=16 * 1024,
        quiet=True,
    )
    options.update(overrides)
    return HttpPolicy(**options)  # type: ignore[arg-type]


# ---------------------------------------------------------------- servers and helpers


@pytest.fixture
def server(httpserver_ipv4: HTTPServer) -> HTTPServer:
    """pytest-httpserver on 127.0.0.1 (cleared for each test)."""
    return httpserver_ipv4


def file_handler(
    payload: bytes = PAYLOAD, *, etag: bool = True, delay_s: float = 0.0
) -> Callable[[Request], Response]:
    """Serve ``payload`` the way a good server does: werkzeug's Range/If-Range/416 logic."""

    def handle(request: Request) -> Response:
        time.sleep(delay_s)
        response = Response(payload, mimetype="application/octet-stream")
        if etag:
            response.set_etag(hashlib.sha256(payload).hexdigest()[:16])
        try:
            return response.make_conditional(
                request, accept_ranges=True, complete_length=len(payload)
            )
        except RequestedRangeNotSatisfiable as exc:
            return exc.get_response()  # type: ignore[return-value]

    return handle


def serve(srv: HTTPServer, path: str = "/w.pth", **options: object) -> str:
    srv.expect_request(path).respond_with_handler(file_handler(**options))  # type: ignore[arg-type]
    return srv.url_for(path)


def requests_to(srv: HTTPServer, path: str = "/w.pth") -> list[Request]:
    return [request for request, _ in srv.log if request.path == path]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / FILENAME


def leave_part(dest: Path, url: str | None, data: bytes) -> None:
    """A ``.part`` (and its ``.part.json`` for ``url``) as an interrupted run leaves them."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part_path(dest).write_bytes(data)
    if url is not None:
        meta = {"url": url, "validator": None}
        dest.with_name(dest.name + ".part.json").write_text(json.dumps(meta))


def leftovers(directory: Path) -> set[str]:
    """Files next to the weights other than the lock file."""
    return {p.name for p in directory.iterdir() if not p.name.endswith(".lock")}


def closed_port_url(host: str = "127.0.0.1") -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}/w.pth"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Name lookups and connections to anything but loopback fail loudly and are recorded."""
    tried: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        tried.append(str(host))
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"test: no lookup of {host} allowed")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return tried


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a test certificate: {exc}")
    return cert, key


@pytest.fixture
def tls_server(tls_cert: tuple[Path, Path]) -> Iterator[HTTPServer]:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, tls_cert))
    srv = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def trust(tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make requests trust the test certificate (as a company CA bundle would be)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_cert[0]))


# ---------------------------------------------------------------- happy paths


def test_download_verifies_sha256_and_leaves_only_the_file(server: HTTPServer, dest: Path):
    assert download_weights(serve(server), dest, DIGEST, fast()) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == {dest.name}  # no .part, no .part.json
    assert lock_path(dest).exists()  # the flock file stays for later waiters
    (request,) = requests_to(server)
    assert request.headers["Accept-Encoding"] == "identity"  # lengths and ranges of the file


def test_file_and_directory_are_fsynced(
    server: HTTPServer, dest: Path, monkeypatch: pytest.MonkeyPatch
):
    kinds: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    download_weights(serve(server), dest, DIGEST, fast())
    assert kinds.count("file") >= 1 and kinds[-1] == "dir"


def test_progress_bar_goes_to_stderr_unless_quiet(
    server: HTTPServer, dest: Path, capsys: pytest.CaptureFixture[str]
):
    url = serve(server)
    download_weights(url, dest, DIGEST, fast(quiet=False))
    out, err = capsys.readouterr()
    assert out == "" and part_path(dest).name in err and "100%" in err
    dest.unlink()
    download_weights(url, dest, DIGEST, fast(quiet=True))
    assert capsys.readouterr() == ("", "")


def test_verified_existing_file_is_used_without_a_request(server: HTTPServer, dest: Path):
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    download_weights(serve(server), dest, DIGEST, fast())
    assert server.log == []


def test_existing_file_with_another_hash_is_moved_aside_not_deleted(server: HTTPServer, dest: Path):
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the user's own file")
    download_weights(serve(server), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    aside = [p for p in dest.parent.iterdir() if ".mismatch-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == b"the user's own file"


def test_existing_directory_at_the_destination_is_an_error(server: HTTPServer, dest: Path):
    dest.mkdir(parents=True)
    with pytest.raises(WeightsError, match="not a regular file"):
        download_weights(serve(server), dest, DIGEST, fast())
    assert dest.is_dir()


def test_file_url_is_copied_and_verified(tmp_path: Path, dest: Path):
    source = tmp_path / "mirror" / "w.pth"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    download_weights(source.as_uri(), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD

    other = tmp_path / "other" / FILENAME
    with pytest.raises(WeightsError, match=OTHER_DIGEST):
        download_weights(source.as_uri(), other, OTHER_DIGEST, fast())
    assert leftovers(other.parent) == set()
    with pytest.raises(WeightsError, match="is not a file"):
        download_weights((tmp_path / "missing.pth").as_uri(), other, None, fast())
    with pytest.raises(WeightsError, match="must be local"):
        download_weights("file://mirror.example.com/w.pth", other, None, fast())


# ---------------------------------------------------------------- verification


@pytest.mark.reliability
def test_checksum_mismatch_names_url_hashes_and_manual_placement(server: HTTPServer, dest: Path):
    url = serve(server)
    with pytest.raises(WeightsError) as info:
        download_weights(url, dest, OTHER_DIGEST, fast())
    message = str(info.value)
    for part in (url, OTHER_DIGEST, DIGEST, str(dest), "by hand"):
        assert part in message
    assert not isinstance(info.value, RuntimeError)
    assert not dest.exists() and leftovers(dest.parent) == set()
    assert len(requests_to(server)) == 2  # one fresh download after the first mismatch, no more


@pytest.mark.reliability
def test_body_longer_than_content_length_is_downloaded_once_more(dest: Path):
    with FaultServer(PAYLOAD) as srv:
        srv.add_faults("long")  # the client stops at the announced length: a wrong file
        download_weights(srv.url(), dest, DIGEST, fast())
        assert dest.read_bytes() == PAYLOAD
        assert [hit["range"] for hit in srv.hits()] == [None, None]


@pytest.mark.reliability
def test_body_shorter_than_content_length_is_retried(dest: Path):
    with FaultServer(PAYLOAD) as srv:
        srv.add_faults("short")
        download_weights(srv.url(), dest, None, fast())
        assert dest.read_bytes() == PAYLOAD
        assert len(srv.hits()) == 2


def test_bad_sha256_and_policy_values_name_the_field(server: HTTPServer, dest: Path):
    with pytest.raises(WeightsError, match="sha256: 'abc' must be 64 hexadecimal digits"):
        download_weights(serve(server), dest, "abc", fast())
    bad = {
        "attempts": 0,
        "backoff_s": -1,
        "backoff_max_s": 0.001,
        "connect_timeout_s": 0,
        "read_timeout_s": 601,
        "lock_timeout_s": 0,
        "chunk_bytes": 0,
    }
    for field, value in bad.items():
        with pytest.raises(ValueError, match=rf".{field}: {value!r} must be"):
            fast(**{field: value})
    assert server.log == []


# ---------------------------------------------------------------- resume and restart


@pytest.mark.reliability
def test_dropped_connection_resumes_with_range_and_if_range(dest: Path):
    with FaultServer(PAYLOAD) as srv:
        srv.add_faults("drop")
        download_weights(srv.url(), dest, DIGEST, fast())
        first, second = srv.hits()
        assert first["range"] is None
        assert re.fullmatch(r"bytes=[1-9]\d*-", second["range"])
        assert second["if_range"] == srv.etag
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
def test_if_range_uses_last_modified_when_the_etag_is_weak(dest: Path):
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    with FaultServer(PAYLOAD, validators={"ETag": 'W/"weak"', "Last-Modified": date}) as srv:
        srv.add_faults("drop")
        download_weights(srv.url(), dest, DIGEST, fast())
        assert [hit["if_range"] for hit in srv.hits()] == [None, date]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
def test_server_ignoring_range_restarts_from_zero(server: HTTPServer, dest: Path):
    server.expect_request("/w.pth").respond_with_data(PAYLOAD)  # no range support: always 200
    url = server.url_for("/w.pth")
    leave_part(dest, url, b"stale bytes of an earlier try")
    download_weights(url, dest, None, fast())
    assert dest.read_bytes() == PAYLOAD  # not the partial bytes plus the whole file
    assert requests_to(server)[0].headers.get("Range") == "bytes=29-"


N = len(PAYLOAD)


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("content_range", "body"),
    [
        (f"bytes 0-{N - 1}/{N}", PAYLOAD),  # not where we asked
        (f"bytes 1000-{N - 2}/{N}", PAYLOAD[1000:-1]),  # not up to the end
        (f"bytes 1000-{N - 1}/{N}", PAYLOAD[1000:2000]),  # Content-Length disagrees
        ("bytes 1000-999/*", b""),  # ends before it starts
        ("bytes=1000-", PAYLOAD[1000:]),  # not a Content-Range
    ],
    ids=["start", "end", "length", "backwards", "unparseable"],
)
def test_inconsistent_content_range_restarts_from_zero(
    server: HTTPServer, dest: Path, content_range: str, body: bytes
):
    headers = {"Content-Range": content_range}
    server.expect_oneshot_request("/w.pth").respond_with_data(body, 206, headers)
    url = serve(server)
    leave_part(dest, url, PAYLOAD[:1000])
    download_weights(url, dest, None, fast())
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in requests_to(server)] == ["bytes=1000-", None]


@pytest.mark.reliability
def test_range_past_the_end_gets_416_and_a_restart(server: HTTPServer, dest: Path):
    url = serve(server)
    leave_part(dest, url, PAYLOAD + b"0123456789")  # the file got shorter than the saved part
    download_weights(url, dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in requests_to(server)] == [f"bytes={N + 10}-", None]
    assert [response.status_code for _, response in server.log] == [416, 200]


@pytest.mark.reliability
def test_partial_file_is_kept_across_runs_and_resumed(dest: Path):
    with FaultServer(PAYLOAD, validators={}) as srv:
        srv.add_faults("drop")
        with pytest.raises(WeightsError, match="kept and the next run resumes"):
            download_weights(srv.url(), dest, None, fast(attempts=1))
        assert part_path(dest).stat().st_size > 0 and not dest.exists()

        download_weights(srv.url(), dest, DIGEST, fast())
        assert srv.hits()[1]["range"] is not None and srv.hits()[1]["if_range"] is None
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
def test_partial_file_is_removed_after_a_non_transient_failure(server: HTTPServer, dest: Path):
    server.expect_request("/w.pth").respond_with_data("gone", status=404)
    url = server.url_for("/w.pth")
    leave_part(dest, url, PAYLOAD[:1000])
    with pytest.raises(WeightsError, match="HTTP 404"):
        download_weights(url, dest, None, fast())
    assert leftovers(dest.parent) == set()


@pytest.mark.reliability
@pytest.mark.parametrize("owner", ["another URL", "unknown"])
def test_partial_file_of_another_url_is_not_resumed(server: HTTPServer, dest: Path, owner: str):
    url = serve(server)
    leave_part(dest, server.url_for("/other.pth") if owner == "another URL" else None, b"x" * 500)
    download_weights(url, dest, None, fast())
    assert requests_to(server)[0].headers.get("Range") is None
    assert dest.read_bytes() == PAYLOAD


# ---------------------------------------------------------------- retries and timeouts


@pytest.mark.reliability
def test_slow_drip_past_the_read_timeout_is_retried(dest: Path):
    with FaultServer(PAYLOAD, drip_pause_s=0.6) as srv:
        srv.add_faults("drip")
        download_weights(srv.url(), dest, DIGEST, fast(read_timeout_s=0.2))
        assert len(srv.hits()) == 2  # without a read timeout the drip would just finish
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
def test_http_500_and_429_are_retried(server: HTTPServer, dest: Path):
    server.expect_oneshot_request("/w.pth").respond_with_data("", 500)
    server.expect_oneshot_request("/w.pth").respond_with_data("", 429, {"Retry-After": "0"})
    download_weights(serve(server), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    assert [response.status_code for _, response in server.log] == [500, 429, 200]


@pytest.mark.reliability
def test_retries_are_capped(server: HTTPServer, dest: Path):
    server.expect_request("/w.pth").respond_with_data("", 503)
    with pytest.raises(WeightsError, match=r"after 3 attempts \(last: HTTP 503"):
        download_weights(server.url_for("/w.pth"), dest, DIGEST, fast(attempts=3))
    assert len(requests_to(server)) == 3
    assert leftovers(dest.parent) == set()


@pytest.mark.reliability
def test_failed_bodies_count_against_the_same_budget(dest: Path):
    with FaultServer(PAYLOAD) as srv:
        srv.add_faults(*["drop"] * 6)
        with pytest.raises(WeightsError, match=r"after 3 attempts .*kept and the next run"):
            download_weights(srv.url(), dest, DIGEST, fast(attempts=3))
        assert len(srv.hits()) == 3


@pytest.mark.reliability
def test_backoff_grows_and_is_capped(server: HTTPServer, dest: Path):
    for _ in range(4):
        server.expect_oneshot_request("/w.pth").respond_with_data("", 502)
    url = serve(server)
    started = time.monotonic()
    download_weights(url, dest, DIGEST, fast(attempts=5, backoff_s=0.1, backoff_max_s=0.15))
    elapsed = time.monotonic() - started
    # urllib3 waits 0, 0.2, 0.4, 0.8 s, each capped at 0.15: about 0.45 s (1.4 s uncapped)
    assert 0.3 <= elapsed < 1.2, elapsed


@pytest.mark.reliability
def test_retry_after_is_honoured_within_the_cap(server: HTTPServer, dest: Path):
    server.expect_oneshot_request("/w.pth").respond_with_data("", 429, {"Retry-After": "1"})
    url = serve(server)
    started = time.monotonic()
    download_weights(url, dest, DIGEST, fast(backoff_max_s=5))
    assert time.monotonic() - started >= 0.9

    dest.unlink()
    server.expect_oneshot_request("/w.pth").respond_with_data("", 503, {"Retry-After": "30"})
    started = time.monotonic()
    download_weights(url, dest, DIGEST, fast(backoff_max_s=0.2))
    assert time.monotonic() - started < 5  # 30 s asked, 0.2 s allowed


@pytest.mark.reliability
def test_client_errors_are_not_retried(server: HTTPServer, dest: Path):
    server.expect_request("/w.pth").respond_with_data("", 404)
    with pytest.raises(WeightsError, match="HTTP 404"):
        download_weights(server.url_for("/w.pth"), dest, DIGEST, fast())
    assert len(requests_to(server)) == 1


@pytest.mark.reliability
def test_unreachable_host_gives_a_clear_error_and_no_file(dest: Path):
    url = closed_port_url()
    with pytest.raises(WeightsError) as info:
        download_weights(url, dest, DIGEST, fast(attempts=2))
    message = str(info.value)
    assert url in message and str(dest) in message and "after 2 attempts" in message
    assert leftovers(dest.parent) == set()


# ---------------------------------------------------------------- URL rules


def test_loopback_http_is_accepted_by_address_and_name(server: HTTPServer, dest: Path):
    serve(server)
    for host in ("127.0.0.1", "localhost"):
        target = dest.with_name(f"{host}.pth")
        download_weights(f"http://{host}:{server.port}/w.pth", target, DIGEST, fast())
        assert target.read_bytes() == PAYLOAD
    # anywhere in 127.0.0.0/8: allowed, so the connection is tried (and refused, no server)
    with pytest.raises(WeightsError, match="could not download"):
        download_weights(closed_port_url("127.8.9.10"), dest, DIGEST, fast(attempts=1))


def test_loopback_http_is_accepted_for_ipv6(request: pytest.FixtureRequest, dest: Path):
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    srv: HTTPServer = request.getfixturevalue("httpserver_ipv6")
    url = serve(srv)
    assert url.startswith("http://[::1]:")
    download_weights(url, dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/w.pth",
        "http://10.0.0.1/w.pth",
        "http://192.168.1.20:8080/w.pth",
        "http://0.0.0.0/w.pth",
        "http://[2001:db8::1]/w.pth",
        "http://127.0.0.1.nip.io/w.pth",
        "http://localhost.example.com/w.pth",
        "ftp://127.0.0.1/w.pth",
        "https:///w.pth",
        "w.pth",
    ],
)
def test_other_urls_are_refused_without_a_connection(
    url: str, dest: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch
):
    def connect(*args: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(WeightsError, match="refused: use https://") as info:
        download_weights(url, dest, None, fast())
    assert repr(url) in str(info.value) and "loopback" in str(info.value)
    assert no_network == [] and not dest.parent.exists()


def test_redirect_between_loopback_http_urls_is_followed(server: HTTPServer, dest: Path):
    serve(server)
    target = f"http://localhost:{server.port}/w.pth"
    server.expect_request("/r").respond_with_data("", 302, {"Location": target})
    download_weights(server.url_for("/r"), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
@pytest.mark.parametrize(
    "target", ["http://weights.example.com/w.pth", "http://10.1.2.3/w.pth", "file:///etc/hosts"]
)
def test_redirect_off_loopback_http_is_refused(
    server: HTTPServer, dest: Path, no_network: list[str], target: str
):
    server.expect_request("/r").respond_with_data("", 302, {"Location": target})
    with pytest.raises(WeightsError, match=rf"refused redirect .* to {re.escape(target)}"):
        download_weights(server.url_for("/r"), dest, None, fast())
    assert set(no_network) <= {"127.0.0.1"} and not dest.exists()


@pytest.mark.reliability
def test_redirect_loop_is_bounded(server: HTTPServer, dest: Path):
    server.expect_request("/r").respond_with_data("", 302, {"Location": "/r"})
    with pytest.raises(WeightsError, match="more than 5 redirects"):
        download_weights(server.url_for("/r"), dest, None, fast())
    assert len(requests_to(server, "/r")) == 6


def test_https_is_downloaded(tls_server: HTTPServer, trust: None, dest: Path):
    url = serve(tls_server)
    assert url.startswith("https://")
    download_weights(url, dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.reliability
def test_redirect_from_https_to_loopback_http_is_refused(
    tls_server: HTTPServer, server: HTTPServer, trust: None, dest: Path
):
    plain = serve(server)
    tls_server.expect_request("/r").respond_with_data("", 302, {"Location": plain})
    with pytest.raises(WeightsError, match="refused redirect .* land on https://"):
        download_weights(tls_server.url_for("/r"), dest, None, fast())
    assert server.log == []


@pytest.mark.reliability
def test_tls_errors_are_not_retried(
    tls_server: HTTPServer, dest: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = serve(tls_server)
    started = time.monotonic()
    with pytest.raises(WeightsError, match="TLS error"):
        download_weights(url, dest, DIGEST, fast(attempts=5, backoff_s=1, backoff_max_s=1))
    assert time.monotonic() - started < 1.5  # retries would have waited 1 s each


# ---------------------------------------------------------------- destination and lock


@pytest.mark.reliability
def test_destination_under_a_regular_file_gives_a_clear_error(server: HTTPServer, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(WeightsError, match="cannot be created.*writable directory"):
        download_weights(serve(server), blocker / "sub" / "w.pth", None, fast())
    assert server.log == []


@pytest.mark.reliability
def test_read_only_destination_gives_a_clear_error(
    server: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    if os.geteuid() == 0:  # root writes through 0o555: make access() answer as for a user
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: Path(path) != directory and real_access(path, mode)
        )
    try:
        with pytest.raises(WeightsError, match="not writable"):
            download_weights(serve(server), directory / "w.pth", None, fast())
    finally:
        directory.chmod(0o755)
    assert server.log == []


@pytest.mark.reliability
def test_disk_errors_are_weights_errors_and_leave_nothing(
    server: HTTPServer, dest: Path, monkeypatch: pytest.MonkeyPatch
):
    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(WeightsError, match="could not write the weights.*No space left"):
        download_weights(serve(server), dest, DIGEST, fast())
    assert leftovers(dest.parent) == set()


HOLD_LOCK = """
import sys, filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.reliability
def test_waiting_for_a_held_lock_is_bounded(server: HTTPServer, dest: Path):
    dest.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path(dest))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(WeightsError, match="waiting for another process"):
            download_weights(serve(server), dest, None, fast(lock_timeout_s=0.3))
        assert time.monotonic() - started < 5
    finally:
        holder.communicate(input="", timeout=30)
    assert server.log == []


# ---------------------------------------------------------------- resolve order


def fake_settings(url: str | None, sha256: str | None = None) -> AppSettings:
    return AppSettings(
        model_name="Fake model",
        app_slug="fake-app",
        package="fakeapp",
        app_version="0.1.0",
        weights_url=url,
        weights_sha256=sha256,
        weights_filename=FILENAME,
        env_prefix="FAKEAPP",
    )


def test_resolve_order_model_dir_then_env_then_download(
    server: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = fake_settings(serve(server), DIGEST)
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"fine-tuned")
    monkeypatch.setenv(settings.weights_env, str(env_file))

    local = model_dir / FILENAME
    local.write_bytes(PAYLOAD)
    assert resolve_weights(settings, model_dir) == local
    local.write_bytes(b"stale")  # fails the check: skipped, the override wins
    assert resolve_weights(settings, model_dir) == env_file
    monkeypatch.setenv(settings.weights_env, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match=settings.weights_env):
        resolve_weights(settings, model_dir)
    assert server.log == []

    monkeypatch.delenv(settings.weights_env)
    assert resolve_weights(settings, model_dir, policy=fast()) == local
    assert local.read_bytes() == PAYLOAD
    assert requests_to(server)[0].headers["User-Agent"] == "fake-app/0.1.0"
    assert [p.name for p in model_dir.iterdir() if ".mismatch-" in p.name]  # "stale", kept

    monkeypatch.setenv(settings.model_dir_env, str(tmp_path / "from-env"))
    with pytest.raises(WeightsError, match=rf"{OTHER_DIGEST}.*\${settings.weights_env}"):
        resolve_weights(settings, sha256=OTHER_DIGEST, policy=fast())


def test_weights_env_may_name_a_folder_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A checkpoint of several files (transformers' config.json + model.safetensors) reaches
    the model as the folder; an empty folder is refused with the variable named."""
    settings = fake_settings(None)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    monkeypatch.setenv(settings.weights_env, str(folder))
    with pytest.raises(WeightsError, match=rf"\${settings.weights_env} .*neither a file nor"):
        resolve_weights(settings, tmp_path / "model_dir")
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"tensors")
    assert resolve_weights(settings, tmp_path / "model_dir") == folder


@pytest.mark.parametrize("url", [None, ""])
def test_no_weights_url_names_every_way_to_give_weights(
    url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = fake_settings(url)
    assert settings.weights_url is None
    monkeypatch.delenv(settings.weights_env, raising=False)
    with pytest.raises(WeightsError) as raised:
        resolve_weights(settings, tmp_path)
    message = str(raised.value)
    named = ("weights_url", "fakeapp/settings.py", FILENAME, str(tmp_path), settings.weights_env)
    for part in named:
        assert part in message
    assert list(tmp_path.iterdir()) == []
    (tmp_path / FILENAME).write_bytes(PAYLOAD)  # placed by hand: used, nothing to download
    assert resolve_weights(settings, tmp_path) == tmp_path / FILENAME


# ---------------------------------------------------------------- CLI


@pytest.fixture
def fake_app(tmp_path: Path) -> Callable[..., Path]:
    """Write ``fakeapp`` (settings.py, model.py) under tmp_path; returns its parent folder."""

    def make(url: str, sha256: str | None = None, required: bool = True) -> Path:
        package = tmp_path / "apps" / "fakeapp"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        settings = repr(fake_settings(url, sha256).model_dump())
        (package / "settings.py").write_text(
            f"from sly_vos.settings import AppSettings\n\nSETTINGS = AppSettings(**{settings})\n"
        )
        (package / "model.py").write_text(
            textwrap.dedent(f"""
                WEIGHTS_REQUIRED = {required}


                class Tracker:
                    def __init__(self, weights_path, device):
                        self.weights_path = weights_path
            """)
        )
        return package.parent

    return make


def cli(root: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{RUNTIME}")
    for name in ("FAKEAPP_WEIGHTS", "FAKEAPP_MODEL_DIR"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "sly_vos.weights", "fakeapp", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(root: Path, *args: str) -> tuple[int, str, str]:
    proc = cli(root, *args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.reliability
def test_two_processes_download_once_and_both_succeed(
    server: HTTPServer, tmp_path: Path, fake_app: Callable[..., Path]
):
    root = fake_app(serve(server, delay_s=1.0), DIGEST)
    shared = tmp_path / "shared"
    procs = [cli(root, "--dest", str(shared), "--quiet") for _ in range(2)]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    target = shared / FILENAME
    assert [out.strip() for out, _ in results] == [str(target)] * 2
    assert target.read_bytes() == PAYLOAD
    assert len(requests_to(server)) == 1  # the second process waited and used the verified file
    assert leftovers(shared) == {FILENAME}


@pytest.mark.reliability
@pytest.mark.parametrize("quiet", [True, False])
def test_cli_failure_is_one_error_line_and_nonzero(
    tmp_path: Path, fake_app: Callable[..., Path], quiet: bool
):
    url = closed_port_url()
    root = fake_app(url)
    args = ["--dest", str(tmp_path / "w"), "--attempts", "1", *(["--quiet"] if quiet else [])]
    code, out, err = run_cli(root, *args)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download " + url), err
    assert "FAKEAPP_WEIGHTS" in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--attempts", "0"], "error: HttpPolicy.attempts: 0 must be 1 to 20"),
        (["--sha256", "abc"], "error: sha256: 'abc' must be 64 hexadecimal digits"),
        (["--url", "http://example.com/w.pth"], "error: weights URL 'http://example.com/w.pth'"),
    ],
)
def test_cli_bad_arguments_are_one_error_line(
    tmp_path: Path, fake_app: Callable[..., Path], args: list[str], expected: str
):
    root = fake_app(closed_port_url())
    code, out, err = run_cli(root, "--dest", str(tmp_path / "w"), *args)
    assert code == 1 and out == "" and err.strip().splitlines() == [err.strip()], err
    assert err.startswith(expected), err


def test_cli_unknown_package_is_one_error_line(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(RUNTIME))
    proc = subprocess.run(
        [sys.executable, "-m", "sly_vos.weights", "nosuchapp"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: app package 'nosuchapp'")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "ok"),
    [
        ([], False),  # the app's weights_sha256 (wrong here) is checked
        (["--sha256", DIGEST], True),
        (["--url", "{url}"], True),  # --url without --sha256: no check
        (["--url", "{url}", "--sha256", ""], True),  # the Docker build's empty build arg
        (["--url", "{url}", "--sha256", OTHER_DIGEST], False),
    ],
)
def test_cli_sha256_follows_url_and_flag(
    server: HTTPServer, tmp_path: Path, fake_app: Callable[..., Path], extra: list[str], ok: bool
):
    url = serve(server)
    root = fake_app(url, OTHER_DIGEST)
    args = [arg.format(url=url) for arg in extra]
    code, out, err = run_cli(root, "--dest", str(tmp_path / "w"), "--quiet", *args)
    if ok:
        assert (code, out.strip()) == (0, str(tmp_path / "w" / FILENAME)), err
    else:
        assert code == 1 and "checksum mismatch" in err and "FAKEAPP_WEIGHTS" in err, err


@pytest.mark.parametrize("quiet", [True, False])
def test_cli_if_required_follows_the_model(
    server: HTTPServer, tmp_path: Path, fake_app: Callable[..., Path], quiet: bool
):
    url = serve(server)
    args = ["--dest", str(tmp_path / "w"), "--if-required", *(["--quiet"] if quiet else [])]
    code, out, err = run_cli(fake_app(url, DIGEST, required=False), *args)
    assert (code, out) == (0, "")
    assert ("needs no weights" in err) is not quiet
    assert server.log == [] and not (tmp_path / "w").exists()

    code, out, err = run_cli(fake_app(url, DIGEST, required=True), *args)
    assert (code, out.strip()) == (0, str(tmp_path / "w" / FILENAME)), err
    assert (tmp_path / "w" / FILENAME).read_bytes() == PAYLOAD


def test_cli_imports_neither_supervisely_nor_torch(
    server: HTTPServer, tmp_path: Path, fake_app: Callable[..., Path]
):
    root = fake_app(serve(server), DIGEST)
    code = (
        "import sys\n"
        "from sly_vos import weights\n"
        f"assert weights.main(['fakeapp', '--dest', {str(tmp_path / 'w')!r}, '--quiet']) == 0\n"
        "print(sorted(m for m in ('supervisely', 'torch') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{RUNTIME}")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


# ---------------------------------------------------------------- load_checkpoint


class _RunsCode:
    """A pickle payload that creates a directory when unpickled the unsafe way."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_load_checkpoint_returns_the_dict(tmp_path: Path):
    path = tmp_path / "ok.pth"
    torch.save({"layer.weight": torch.arange(4.0)}, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["layer.weight"], torch.arange(4.0))
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.reliability
def test_unsafe_pickle_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(WeightsError, match="refused for safety.*weights-only") as info:
        load_checkpoint(path)
    assert "mkdir" in str(info.value)
    assert not marker.exists()

    control = tmp_path / "control"  # the payload is live: the unsafe loader runs it
    torch.save({"payload": _RunsCode(control)}, path)
    torch.load(path, weights_only=False)
    assert control.is_dir()


@pytest.mark.reliability
@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "text", "tensor"])
def test_not_a_checkpoint_gives_a_clear_error(tmp_path: Path, kind: str):
    path = tmp_path / f"{kind}.pth"
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(64)}, good)
    if kind == "garbage":
        path.write_bytes(random.Random(1).randbytes(4096))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match=re.escape(str(path))) as info:
        load_checkpoint(path)
    expected = "expected a dict" if kind == "tensor" else "not a .*PyTorch checkpoint"
    assert re.search(expected, str(info.value))
    assert "Weights only load failed" not in str(info.value)  # torch's preamble is dropped


def test_missing_checkpoint_names_the_path(tmp_path: Path):
    with pytest.raises(WeightsError, match="nope.pth is not a file"):
        load_checkpoint(tmp_path / "nope.pth")


def test_weights_error_is_not_a_runtime_error():
    assert not issubclass(WeightsError, RuntimeError)
