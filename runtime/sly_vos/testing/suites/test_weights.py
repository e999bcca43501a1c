"""The weight-download hook against a real, misbehaving HTTP server on 127.0.0.1.

Each protection of ``weights.py`` has a test here that fails without it; fault-injection tests
are marked ``reliability``. Timeouts and backoffs are tiny so the file stays fast.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from _http_faults import FaultServer
from {{ cookiecutter.__package_name }} import model, settings, weights
from {{ cookiecutter.__package_name }}.weights import (
    DownloadPolicy,
    WeightsError,
    download_weights,
    load_checkpoint,
    lock_path,
    part_path,
    resolve_weights,
)

PAYLOAD = random.Random(7).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
OTHER_DIGEST = hashlib.sha256(b"another file").hexdigest()
SRC = Path(__file__).resolve().parents[1] / "src"


def fast(**overrides: object) -> DownloadPolicy:
    """A policy for loopback tests: few attempts, millisecond backoff, short timeouts."""
    options: dict[str, object] = dict(
        attempts=4,
        backoff_s=0.01,
        max_backoff_s=0.05,
        connect_timeout_s=2.0,
        read_timeout_s=2.0,
        lock_timeout_s=30.0,
        chunk_bytes=16 * 1024,
        allow_http=True,
        quiet=True,
    )
    options.update(overrides)
    return DownloadPolicy(**options)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(PAYLOAD) as srv:
        yield srv


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models" / settings.WEIGHTS_FILENAME


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"


def leftovers(directory: Path) -> set[str]:
    """Files next to the weights other than the lock file."""
    return {p.name for p in directory.iterdir() if not p.name.endswith(".lock")}


def cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop(settings.WEIGHTS_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", f"{settings.PACKAGE}.weights", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------- happy paths


def test_download_verifies_sha256_and_leaves_only_the_file(server: FaultServer, dest: Path):
    assert download_weights(server.url(), dest, DIGEST, fast()) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == {dest.name}
    assert len(server.hits()) == 1


def test_progress_bar_goes_to_stderr_unless_quiet(
    server: FaultServer, dest: Path, capsys: pytest.CaptureFixture[str]
):
    download_weights(server.url(), dest, DIGEST, fast(quiet=False))
    out, err = capsys.readouterr()
    assert out == "" and part_path(dest).name in err and "100%" in err
    dest.unlink()
    download_weights(server.url(), dest, DIGEST, fast(quiet=True))
    assert capsys.readouterr() == ("", "")


def test_verified_existing_file_is_used_without_a_request(server: FaultServer, dest: Path):
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    download_weights(server.url(), dest, DIGEST, fast())
    assert server.hits() == []


def test_existing_file_with_another_hash_is_moved_aside_not_deleted(
    server: FaultServer, dest: Path
):
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"the user's own file")
    download_weights(server.url(), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    aside = [p for p in dest.parent.iterdir() if ".mismatch-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == b"the user's own file"


def test_file_url_is_copied_and_verified(tmp_path: Path, dest: Path):
    source = tmp_path / "mirror" / "w.pth"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    download_weights(source.as_uri(), dest, DIGEST, fast(allow_http=False))
    assert dest.read_bytes() == PAYLOAD

    other = tmp_path / "other" / settings.WEIGHTS_FILENAME
    with pytest.raises(WeightsError, match=OTHER_DIGEST):
        download_weights(source.as_uri(), other, OTHER_DIGEST, fast())
    assert leftovers(other.parent) == set()
    with pytest.raises(WeightsError, match="is not a file"):
        download_weights((tmp_path / "missing.pth").as_uri(), other, None, fast())


# ---------------------------------------------------------------- verification


@pytest.mark.reliability
def test_checksum_mismatch_names_url_hashes_and_manual_placement(server: FaultServer, dest: Path):
    with pytest.raises(WeightsError) as info:
        download_weights(server.url(), dest, OTHER_DIGEST, fast())
    message = str(info.value)
    for part in (server.url(), OTHER_DIGEST, DIGEST, str(dest), settings.WEIGHTS_ENV):
        assert part in message
    assert not isinstance(info.value, RuntimeError)
    assert not dest.exists() and leftovers(dest.parent) == set()
    assert len(server.hits()) == 2  # one fresh download after the first mismatch, no more


@pytest.mark.reliability
def test_body_longer_than_content_length_is_a_failed_attempt(server: FaultServer, dest: Path):
    server.add_faults("long")  # the client stops at the announced length: a wrong file
    download_weights(server.url(), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits()) == 2


@pytest.mark.reliability
def test_body_shorter_than_content_length_is_retried(server: FaultServer, dest: Path):
    server.add_faults("short")
    download_weights(server.url(), dest, None, fast())
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits()) >= 2


# ---------------------------------------------------------------- resume and restart


@pytest.mark.reliability
def test_dropped_connection_resumes_with_range(server: FaultServer, dest: Path):
    server.add_faults("drop")
    download_weights(server.url(), dest, None, fast())
    assert dest.read_bytes() == PAYLOAD
    first, second = server.hits()
    assert first["range"] is None
    assert second["range"].startswith("bytes=") and second["range"] != "bytes=0-"
    assert second["if_range"] == server.etag


@pytest.mark.reliability
def test_server_without_range_support_restarts_from_zero(dest: Path):
    with FaultServer(PAYLOAD, ranges=False) as srv:
        srv.add_faults("drop")
        download_weights(srv.url(), dest, None, fast())
        assert dest.read_bytes() == PAYLOAD  # not the partial bytes plus the whole file
        assert len(srv.hits()) == 2


@pytest.mark.reliability
def test_inconsistent_content_range_restarts_from_zero(server: FaultServer, dest: Path):
    server.add_faults("drop", "bad-range")
    download_weights(server.url(), dest, None, fast())
    assert dest.read_bytes() == PAYLOAD
    assert [hit["range"] is None for hit in server.hits()] == [True, False, True]


@pytest.mark.reliability
def test_partial_file_is_kept_across_runs_and_restarted_on_416(dest: Path):
    with FaultServer(PAYLOAD, etag=False) as srv:
        srv.add_faults("drop")
        with pytest.raises(WeightsError, match="kept and the next run resumes"):
            download_weights(srv.url(), dest, None, fast(attempts=1))
        assert part_path(dest).stat().st_size > 0 and not dest.exists()

        srv.payload = PAYLOAD[:1000]  # the file got shorter than the saved part
        download_weights(srv.url(), dest, None, fast())
        assert dest.read_bytes() == PAYLOAD[:1000]
        assert [hit["range"] is None for hit in srv.hits()] == [True, False, True]


@pytest.mark.reliability
def test_partial_file_of_another_url_is_not_resumed(server: FaultServer, dest: Path):
    server.add_faults("drop")
    with pytest.raises(WeightsError):
        download_weights(server.url("/a.pth"), dest, None, fast(attempts=1))
    assert part_path(dest).exists()
    download_weights(server.url("/b.pth"), dest, None, fast())
    assert server.hits("/b.pth")[0]["range"] is None
    assert dest.read_bytes() == PAYLOAD


# ---------------------------------------------------------------- retries and timeouts


@pytest.mark.reliability
def test_slow_drip_past_the_read_timeout_is_retried(dest: Path):
    with FaultServer(PAYLOAD, drip_pause_s=0.6) as srv:
        srv.add_faults("drip")
        download_weights(srv.url(), dest, DIGEST, fast(read_timeout_s=0.2))
        assert dest.read_bytes() == PAYLOAD
        assert len(srv.hits()) == 2  # without a read timeout the drip would just finish


@pytest.mark.reliability
def test_http_500_and_429_are_retried(server: FaultServer, dest: Path):
    server.add_faults("500", "429")
    download_weights(server.url(), dest, DIGEST, fast())
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits()) == 3


@pytest.mark.reliability
def test_retries_are_capped(server: FaultServer, dest: Path):
    server.add_faults(*["500"] * 10)
    with pytest.raises(WeightsError, match=r"after 3 attempts \(last: HTTP 500"):
        download_weights(server.url(), dest, DIGEST, fast(attempts=3))
    assert len(server.hits()) == 3
    assert leftovers(dest.parent) == set()


@pytest.mark.reliability
def test_client_errors_are_not_retried(server: FaultServer, dest: Path):
    server.add_faults("404")
    with pytest.raises(WeightsError, match="HTTP 404"):
        download_weights(server.url(), dest, DIGEST, fast())
    assert len(server.hits()) == 1


@pytest.mark.reliability
def test_unreachable_host_gives_a_clear_error_and_no_file(dest: Path):
    url = closed_port_url()
    with pytest.raises(WeightsError) as info:
        download_weights(url, dest, DIGEST, fast(attempts=2))
    message = str(info.value)
    assert url in message and str(dest) in message and settings.WEIGHTS_ENV in message
    assert leftovers(dest.parent) == set()


# ---------------------------------------------------------------- URL policy


@pytest.mark.reliability
def test_redirect_to_a_non_https_url_is_refused(server: FaultServer, dest: Path):
    server.redirects["/r.pth"] = server.url("/weights.pth")
    with pytest.raises(WeightsError, match=r"refused redirect .* https://"):
        download_weights(server.url("/r.pth"), dest, None, fast())
    assert server.hits("/weights.pth") == []
    assert not dest.exists()


def test_plain_http_needs_allow_http(server: FaultServer, dest: Path):
    with pytest.raises(WeightsError, match="plain http is refused"):
        download_weights(server.url(), dest, None, fast(allow_http=False))
    assert server.log == []


def test_bad_sha256_and_policy_values_name_the_field(server: FaultServer, dest: Path):
    with pytest.raises(WeightsError, match="sha256: 'abc' must be 64 hexadecimal digits"):
        download_weights(server.url(), dest, "abc", fast())
    with pytest.raises(ValueError, match="DownloadPolicy.attempts: 0"):
        fast(attempts=0)


# ---------------------------------------------------------------- destination


@pytest.mark.reliability
def test_destination_under_a_regular_file_gives_a_clear_error(server: FaultServer, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(WeightsError, match="cannot be created.*writable directory"):
        download_weights(server.url(), blocker / "sub" / "w.pth", None, fast())
    assert server.log == []


@pytest.mark.reliability
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_read_only_destination_gives_a_clear_error(server: FaultServer, tmp_path: Path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(WeightsError, match="not writable"):
            download_weights(server.url(), directory / "w.pth", None, fast())
    finally:
        directory.chmod(0o755)


@pytest.mark.reliability
def test_waiting_for_a_held_lock_is_bounded(server: FaultServer, dest: Path):
    dest.parent.mkdir(parents=True)
    with open(lock_path(dest), "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(WeightsError, match="waiting for another process"):
            download_weights(server.url(), dest, None, fast(lock_timeout_s=0.3))
    assert server.log == []


@pytest.mark.reliability
def test_two_processes_download_once_and_both_succeed(tmp_path: Path):
    with FaultServer(PAYLOAD, slow_s=1.0) as srv:
        args = (
            "--dest",
            str(tmp_path / "shared"),
            "--url",
            srv.url(),
            "--sha256",
            DIGEST,
            "--allow-http",
            "--quiet",
            "--backoff",
            "0.01",
        )
        procs = [cli(*args, cwd=tmp_path) for _ in range(2)]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], results
        target = tmp_path / "shared" / settings.WEIGHTS_FILENAME
        assert [out.strip() for out, _ in results] == [str(target)] * 2
        assert target.read_bytes() == PAYLOAD
        assert len(srv.hits()) == 1  # the second process waited and used the verified file
        assert leftovers(target.parent) == {target.name}


# ---------------------------------------------------------------- resolve order


def test_resolve_order_model_dir_then_env_then_download(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"fine-tuned")
    unreachable = closed_port_url()
    monkeypatch.setenv(settings.WEIGHTS_ENV, str(env_file))

    local = model_dir / settings.WEIGHTS_FILENAME
    local.write_bytes(PAYLOAD)
    assert resolve_weights(model_dir, url=unreachable, sha256=DIGEST) == local

    local.write_bytes(b"stale")  # fails the check: skipped, the env override wins
    assert resolve_weights(model_dir, url=unreachable, sha256=DIGEST) == env_file
    local.unlink()
    assert resolve_weights(model_dir, url=unreachable, sha256=DIGEST) == env_file

    monkeypatch.setenv(settings.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match=settings.WEIGHTS_ENV):
        resolve_weights(model_dir, url=unreachable, sha256=DIGEST)

    monkeypatch.delenv(settings.WEIGHTS_ENV)
    assert server.log == []
    got = resolve_weights(model_dir, url=server.url(), sha256=DIGEST, policy=fast())
    assert got == local and local.read_bytes() == PAYLOAD


# ---------------------------------------------------------------- CLI


def test_cli_if_required_follows_the_model(
    server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    args = [
        "--dest",
        str(tmp_path / "w"),
        "--url",
        server.url(),
        "--sha256",
        DIGEST,
        "--allow-http",
        "--quiet",
        "--if-required",
    ]
    monkeypatch.setattr(model, "WEIGHTS_REQUIRED", False)
    assert weights.main(args) == 0
    assert server.log == [] and not (tmp_path / "w").exists()

    monkeypatch.setattr(model, "WEIGHTS_REQUIRED", True)
    assert weights.main(args) == 0
    target = tmp_path / "w" / settings.WEIGHTS_FILENAME
    assert capsys.readouterr().out.strip() == str(target)
    assert target.read_bytes() == PAYLOAD


@pytest.mark.reliability
@pytest.mark.parametrize("quiet", [True, False])
def test_cli_failure_is_one_error_line_and_nonzero(tmp_path: Path, quiet: bool):
    url = closed_port_url()
    args = ["--dest", str(tmp_path / "w"), "--url", url, "--allow-http", "--attempts", "1"]
    proc = cli(*args, *(["--quiet"] if quiet else []), cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download " + url), err


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
    with pytest.raises(WeightsError, match=str(path)) as info:
        load_checkpoint(path)
    expected = "expected a dict" if kind == "tensor" else "not a .*PyTorch checkpoint"
    assert re.search(expected, str(info.value))


def test_missing_checkpoint_names_the_path_and_env(tmp_path: Path):
    with pytest.raises(WeightsError, match=settings.WEIGHTS_ENV):
        load_checkpoint(tmp_path / "nope.pth")


def test_weights_error_is_not_a_runtime_error():
    assert not issubclass(WeightsError, RuntimeError)
