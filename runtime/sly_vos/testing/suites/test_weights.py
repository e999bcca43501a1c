"""The app's own weights: where they are looked for, the CLI's ``--if-required``, its test file.

Runs inside every generated app (through the runtime's pytest plugin, which provides the
``app_spec``, ``app_root`` and ``test_weights`` fixtures), against the app's settings and
model. The download protections themselves (resume, retries, locking, URL rules, unsafe
pickles) are the runtime's and are tested once, in the runtime's ``tests/test_weights.py``.
Downloads here come from a loopback server (``url=``), so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sly_vos.appspec import AppSpec
from sly_vos.settings import AppSettings
from sly_vos.testing.faults import FaultServer
from sly_vos.weights import WeightsError, load_checkpoint, resolve_weights

PAYLOAD = random.Random(11).randbytes(64 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def settings(app_spec: AppSpec, monkeypatch: pytest.MonkeyPatch) -> AppSettings:
    """The app's settings, with its weights and model-dir variables unset for the test."""
    monkeypatch.delenv(app_spec.settings.weights_env, raising=False)
    monkeypatch.delenv(app_spec.settings.model_dir_env, raising=False)
    return app_spec.settings


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(PAYLOAD) as srv:
        yield srv


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model_dir"
    directory.mkdir()
    return directory


def unreachable_url() -> str:
    """A loopback URL nothing listens on: any download attempt fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"


def test_resolve_order_model_dir_then_env_then_download(
    settings: AppSettings,
    server: FaultServer,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    local = model_dir / settings.weights_filename
    env_file = tmp_path / "fine-tuned.pth"
    env_file.write_bytes(b"fine-tuned")
    monkeypatch.setenv(settings.weights_env, str(env_file))
    offline = {"url": unreachable_url(), "sha256": DIGEST}

    local.write_bytes(PAYLOAD)
    assert resolve_weights(settings, model_dir, **offline) == local  # 1. the model dir
    local.write_bytes(b"stale")
    assert resolve_weights(settings, model_dir, **offline) == env_file  # 2. the override
    monkeypatch.delenv(settings.weights_env)
    assert server.log == []

    got = resolve_weights(settings, model_dir, url=server.url(), sha256=DIGEST)  # 3. download
    assert got == local and local.read_bytes() == PAYLOAD
    assert len(server.hits()) == 1
    assert [p.read_bytes() for p in model_dir.iterdir() if ".mismatch-" in p.name] == [b"stale"]


def test_model_dir_defaults_to_the_apps_variable(
    settings: AppSettings, server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(settings.model_dir_env, str(tmp_path / "from-env"))
    got = resolve_weights(settings, url=server.url(), sha256=DIGEST)
    assert got == tmp_path / "from-env" / settings.weights_filename
    assert got.read_bytes() == PAYLOAD


def test_model_dir_file_with_the_wrong_sha256_is_skipped(
    settings: AppSettings, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """With the app's own ``weights_sha256`` (the default): a file that fails it is not used."""
    local = model_dir / settings.weights_filename
    local.write_bytes(b"not the weights the app pins")
    env_file = tmp_path / "override.pth"
    env_file.write_bytes(b"override")
    monkeypatch.setenv(settings.weights_env, str(env_file))
    got = resolve_weights(settings, model_dir, url=unreachable_url())
    if settings.weights_sha256 is None:  # nothing pinned: the model-dir file is used as is
        assert got == local
    else:
        assert got == env_file
        assert local.read_bytes() == b"not the weights the app pins"  # skipped, not deleted


def test_weights_env_naming_a_missing_file_is_a_clear_error(
    settings: AppSettings, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    missing = tmp_path / "no-such-file.pth"
    monkeypatch.setenv(settings.weights_env, str(missing))
    with pytest.raises(WeightsError) as info:
        resolve_weights(settings, model_dir, url=unreachable_url())
    message = str(info.value)
    assert f"${settings.weights_env}" in message and str(missing) in message
    assert not isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("quiet", [True, False])
def test_cli_if_required_follows_the_model(
    app_spec: AppSpec, app_root: Path, server: FaultServer, tmp_path: Path, quiet: bool
):
    dest = tmp_path / "weights"
    env = dict(os.environ, PYTHONPATH=str(app_root / "src"))
    env.pop(app_spec.settings.weights_env, None)
    env.pop(app_spec.settings.model_dir_env, None)
    command = [
        sys.executable, "-m", "sly_vos.weights", app_spec.settings.package, "--if-required",
        "--dest", str(dest), "--url", server.url(), "--sha256", DIGEST,
    ]  # fmt: skip
    proc = subprocess.run(
        command + (["--quiet"] if quiet else []),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    if app_spec.weights_required:
        target = dest / app_spec.settings.weights_filename
        assert proc.stdout.strip() == str(target)
        assert target.read_bytes() == PAYLOAD
    else:
        assert proc.stdout == "" and server.log == [] and not dest.exists()
        assert ("needs no weights" in proc.stderr) is not quiet


def test_test_weights_load_as_a_checkpoint(app_spec: AppSpec, test_weights: Path | None):
    if not app_spec.weights_required:
        pytest.skip(f"{app_spec.settings.model_name} needs no weights file")
    assert test_weights is not None and test_weights.exists(), "make_test_weights wrote nothing"
    if test_weights.is_dir():  # a checkpoint of several files: the model loads the folder
        assert [p for p in test_weights.iterdir() if p.is_file()], f"{test_weights} is empty"
        assert app_spec.make_tracker(test_weights, "cpu") is not None
        return
    checkpoint = load_checkpoint(test_weights)
    assert isinstance(checkpoint, dict) and checkpoint, "the test weights are an empty dict"
