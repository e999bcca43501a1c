"""Named checkpoints: declaration rules, the choice by ``$<PREFIX>_CHECKPOINT``, URL and Hub
sources with their guarantees (checksum, lock, offline, faults) against loopback stand-ins."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sly_vos import checkpoints as ck
from sly_vos.app import _checkpoint_or_exit
from sly_vos.appspec import AppSpec
from sly_vos.settings import AppSettings
from sly_vos.testing.hub import HubStandIn
from sly_vos.weights import WeightsError
from sly_vos.weights import main as weights_cli

CONFIG = b'{"model_type": "fake"}'
TENSORS = random.Random(5).randbytes(48 * 1024)
COMMIT = "c0ffee" + "0" * 34


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SETTINGS = AppSettings(
    model_name="Fake", app_slug="serve-fake", package="fakeapp", app_version="0.0.1",
    weights_url=None, weights_sha256=None, weights_filename="weights.pth", env_prefix="FAKEAPP",
)  # fmt: skip


def hub(name: str = "tiny", default: bool = True, **kw: object) -> ck.Checkpoint:
    files = ("config.json", "model.safetensors")
    return ck.Checkpoint(
        name, files, hub_repo="org/fake-" + name, revision="main", default=default, **kw
    )  # type: ignore[arg-type]


# ---------------------------------------------------------------- a Hub stand-in


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    srv = HubStandIn({"config.json": CONFIG, "model.safetensors": TENSORS}, COMMIT).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv(SETTINGS.weights_env, raising=False)
    yield srv
    srv.stop()


def unreachable() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# ---------------------------------------------------------------- declaring and choosing


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"name": "tiny model"}, "name must match"),
        ({"files": ()}, "files must be plain file names"),
        ({"files": ("../x",)}, "files must be plain file names"),
        ({"urls": ("https://e.com/a",), "hub_repo": "o/r"}, "either urls"),
        ({"urls": ()}, "either urls"),
        ({"urls": ("https://e.com/a", "https://e.com/b")}, "2 urls for 1 files"),
        ({"sha256": ("ab",)}, "sha256"),
    ],
)
def test_a_bad_declaration_names_the_field(kwargs: dict, rule: str) -> None:
    fields = {"name": "x", "files": ("x.pth",), "urls": ("https://e.com/x.pth",)} | kwargs
    with pytest.raises(ck.CheckpointError, match=rule):
        ck.Checkpoint(**fields)


def model_with(*declared: ck.Checkpoint) -> ModuleType:
    module = ModuleType("fakeapp.model")
    module.CHECKPOINTS = declared  # type: ignore[attr-defined]
    module.WEIGHTS_REQUIRED = True  # type: ignore[attr-defined]
    module.Tracker = object  # type: ignore[attr-defined]
    return module


def test_names_are_unique_and_one_is_the_default() -> None:
    with pytest.raises(ck.CheckpointError, match="unique"):
        ck.declared(model_with(hub("a"), hub("a", default=False)))
    with pytest.raises(ck.CheckpointError, match="exactly one default, got none"):
        ck.declared(model_with(hub("a", default=False)))
    with pytest.raises(ck.CheckpointError, match="exactly one default"):
        ck.declared(model_with(hub("a"), hub("b")))
    assert ck.declared(ModuleType("m")) == ()


def test_the_variable_picks_a_checkpoint_the_default_otherwise() -> None:
    declared = (hub("tiny"), hub("large", default=False))
    assert ck.select(SETTINGS, declared, environ={}).name == "tiny"
    assert ck.select(SETTINGS, declared, environ={"FAKEAPP_CHECKPOINT": "large"}).name == "large"
    assert ck.select(SETTINGS, declared, "large", environ={}).name == "large"
    with pytest.raises(ck.CheckpointError) as info:
        ck.select(SETTINGS, declared, environ={"FAKEAPP_CHECKPOINT": "huge"})
    assert str(info.value) == (
        "$FAKEAPP_CHECKPOINT='huge' is not a checkpoint of Fake; valid: tiny (default), large"
    )
    assert ck.select(SETTINGS, (), environ={}) is None
    with pytest.raises(ck.CheckpointError, match="declares no named checkpoints"):
        ck.select(SETTINGS, (), environ={"FAKEAPP_CHECKPOINT": "tiny"})


def test_an_unknown_name_stops_the_app_at_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = AppSpec(SETTINGS, model_with(hub("tiny"), hub("small", default=False)))
    monkeypatch.setenv("FAKEAPP_CHECKPOINT", "medium")
    with pytest.raises(SystemExit) as info:
        _checkpoint_or_exit(spec)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid: tiny (default), small" in err
    monkeypatch.setenv("FAKEAPP_CHECKPOINT", "small")
    assert _checkpoint_or_exit(spec).name == "small"  # type: ignore[union-attr]


# ---------------------------------------------------------------- direct URLs


def test_url_checkpoints_one_file_is_the_file_several_the_folder(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "config.json").write_bytes(CONFIG)
    (src / "model.safetensors").write_bytes(TENSORS)
    one = ck.Checkpoint(
        "one",
        ("model.safetensors",),
        urls=((src / "model.safetensors").as_uri(),),
        sha256=(sha(TENSORS),),
    )
    two = ck.Checkpoint(
        "two", ("config.json", "model.safetensors"),
        urls=tuple((src / f).as_uri() for f in ("config.json", "model.safetensors")),
    )  # fmt: skip
    model_dir = tmp_path / "model_dir"
    assert ck.fetch(one, model_dir) == model_dir / "model.safetensors"
    folder = ck.fetch(two, model_dir)
    assert folder == model_dir / "two" and (folder / "config.json").read_bytes() == CONFIG
    assert ck.local(two, model_dir) == folder
    (model_dir / "model.safetensors").write_bytes(b"tampered")
    assert ck.local(one, model_dir) is None  # a file that fails its sha256 is not used


def test_url_checkpoint_with_a_wrong_sha256_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "w.pth"
    src.write_bytes(TENSORS)
    bad = ck.Checkpoint("w", ("w.pth",), urls=(src.as_uri(),), sha256=("0" * 64,))
    with pytest.raises(WeightsError, match="0" * 64):
        ck.fetch(bad, tmp_path / "model_dir")
    assert not (tmp_path / "model_dir" / "w.pth").exists()


# ---------------------------------------------------------------- the Hub


def test_hub_checkpoint_reaches_the_model_as_its_folder(
    stand_in: HubStandIn, tmp_path: Path
) -> None:
    folder = ck.resolve(SETTINGS, hub(), tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == TENSORS
    assert folder.is_relative_to(tmp_path / ck.HUB_CACHE) and COMMIT in folder.parts
    before = len(stand_in.log)
    assert ck.resolve(SETTINGS, hub(), tmp_path) == folder  # from the cache: no request
    assert len(stand_in.log) == before


def test_hub_token_is_sent(
    stand_in: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    ck.fetch(hub(), tmp_path)
    sent = {auth for _, path, auth in stand_in.log if "/resolve/" in path}
    assert sent == {"Bearer hf_secret_for_test"}


def test_offline_without_the_files_is_a_clear_error(
    stand_in: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        ck.resolve(SETTINGS, hub(), tmp_path)
    message = str(info.value)
    assert "'tiny'" in message and "HF_HUB_OFFLINE is set" in message and "org/fake-tiny" in message
    assert "$FAKEAPP_WEIGHTS" in message and stand_in.log == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    folder = ck.fetch(hub(), tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ck.resolve(SETTINGS, hub(), tmp_path) == folder  # offline, from the cache


def test_an_unreachable_hub_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", unreachable())
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match="checkpoint 'tiny'.*org/fake-tiny"):
        ck.fetch(hub(), tmp_path)


def test_a_transient_error_is_retried_and_a_cut_body_resumed(
    stand_in: HubStandIn, tmp_path: Path
) -> None:
    stand_in.fail = [500]
    stand_in.truncate = 1
    folder = ck.fetch(hub(), tmp_path)
    assert (folder / "model.safetensors").read_bytes() == TENSORS
    assert (folder / "config.json").read_bytes() == CONFIG
    assert stand_in.file_gets() == 3  # the cut file was asked for once more (the rest only)
    assert [code for code in stand_in.fail] == []  # the 500 was answered, then retried


def test_a_refused_download_is_a_clear_error_and_leaves_nothing(
    stand_in: HubStandIn, tmp_path: Path
) -> None:
    stand_in.fail = [401] * 4
    with pytest.raises(WeightsError, match=r"checkpoint 'tiny'.*org/fake-tiny/config\.json"):
        ck.fetch(hub(), tmp_path)
    stand_in.fail = []
    assert ck.local(hub(), tmp_path) is None


def test_hub_file_failing_a_declared_sha256_is_refused(
    stand_in: HubStandIn, tmp_path: Path
) -> None:
    pinned = hub(sha256=(sha(CONFIG), "f" * 64))
    with pytest.raises(WeightsError, match="does not match sha256 " + "f" * 64):
        ck.fetch(pinned, tmp_path)
    assert ck.local(pinned, tmp_path) is None
    assert ck.fetch(hub(sha256=(sha(CONFIG), sha(TENSORS))), tmp_path).is_dir()


def test_two_processes_fetching_at_once_download_once(stand_in: HubStandIn, tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ck.fetch(hub(), tmp_path))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(set(results)) == 1 and len(results) == 3
    assert stand_in.gets("model.safetensors") == 1


def test_weights_variable_stands_in_for_a_missing_checkpoint(
    stand_in: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "fine-tuned"
    own.mkdir()
    (own / "config.json").write_bytes(CONFIG)
    monkeypatch.setenv(SETTINGS.weights_env, str(own))
    assert ck.resolve(SETTINGS, hub(), tmp_path / "model_dir") == own
    assert stand_in.log == []


def test_cli_bakes_the_named_checkpoint_and_refuses_an_unknown_one(
    stand_in: HubStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = model_with(hub("tiny"), hub("small", default=False))
    monkeypatch.setattr(
        AppSpec, "from_package", classmethod(lambda cls, name: cls(SETTINGS, module))
    )
    assert (
        weights_cli(["fakeapp", "--dest", str(tmp_path), "--checkpoint", "small", "--quiet"]) == 0
    )
    printed = Path(capsys.readouterr().out.strip())
    assert "models--org--fake-small" in str(printed) and (printed / "config.json").is_file()
    monkeypatch.setenv("FAKEAPP_CHECKPOINT", "huge")
    assert weights_cli(["fakeapp", "--dest", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valid: tiny (default), small" in err
