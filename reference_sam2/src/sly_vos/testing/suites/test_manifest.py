"""The manifest, Dockerfile, requirements and launch config agree with each other and with
the answers in ``.cruft.json``, and the vendored runtime is the verbatim copy it claims to be.

No Docker engine is needed: the Dockerfile is parsed, every file it copies must exist, and
every version that appears in several places must be the same everywhere. A fact the runtime
never reads (app name, port, GPU policy, SDK pin) is checked where it lives, against the
answers ``cruft update`` re-renders the app from.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

import sly_vos
from sly_vos.appspec import AppSpec
from sly_vos.settings import AppSettings

ENTRYPOINT_RE = re.compile(
    r"^python -m uvicorn main:model\.app --app-dir \./src --host 0\.0\.0\.0 "
    r"--port (?P<port>[0-9]+) --ws websockets$"
)


@pytest.fixture(scope="module")
def settings(app_spec: AppSpec) -> AppSettings:
    return app_spec.settings


@pytest.fixture(scope="module")
def answers(app_root: Path) -> dict:
    """The template answers the app was generated with (``cruft update`` renders from them)."""
    record = json.loads((app_root / ".cruft.json").read_text(encoding="utf-8"))
    return record["context"]["cookiecutter"]


@pytest.fixture(scope="module")
def manifest(app_root: Path) -> dict:
    return json.loads((app_root / "config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dockerfile(app_root: Path) -> DockerfileParser:
    parser = DockerfileParser(path=str(app_root / "docker" / "Dockerfile"))
    return parser


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_manifest_has_what_supervisely_needs(manifest: dict, answers: dict) -> None:
    assert manifest["type"] == "app"
    assert "sly_video_tracking" in manifest["session_tags"]
    assert {"bitmap", "polygon"} <= set(manifest["allowed_shapes"])
    assert manifest["task_location"] == "application_sessions"
    assert manifest["headless"] is True
    assert {"videos", "segmentation & tracking", "serve"} <= set(manifest["categories"])
    assert manifest["name"] == answers["app_name"]


def test_entrypoint_port_and_launch_config_agree(
    manifest: dict, app_root: Path, answers: dict
) -> None:
    match = ENTRYPOINT_RE.match(manifest["entrypoint"])
    assert match, manifest["entrypoint"]
    assert int(match["port"]) == manifest["port"] == int(answers["port"])
    launch = json.loads((app_root / ".vscode" / "launch.json").read_text(encoding="utf-8"))
    serve = launch["configurations"][0]
    assert serve["module"] == "uvicorn"
    expected_args = shlex.split(manifest["entrypoint"])[3:]
    assert serve["args"] == expected_args


def test_gpu_policy(manifest: dict, answers: dict) -> None:
    if answers["gpu"] == "no":
        assert "gpu" not in manifest and manifest["need_gpu"] is False
    else:
        assert manifest["gpu"] == answers["gpu"]
        assert manifest["need_gpu"] is (answers["gpu"] == "required")


def test_versions_have_one_value_everywhere(
    manifest: dict,
    dockerfile: DockerfileParser,
    app_root: Path,
    settings: AppSettings,
    answers: dict,
) -> None:
    pins = requirement_pins(app_root / "requirements.txt")
    assert pins["supervisely"] == answers["sdk_version"]
    assert dockerfile.labels["python_sdk_version"] == pins["supervisely"]
    image, tag = manifest["docker_image"].rsplit(":", 1)
    assert tag == settings.app_version
    assert image in (app_root / "docker" / "Dockerfile").read_text(encoding="utf-8")
    torch_arg = dockerfile.args["TORCH_VERSION"]
    assert pins["torch"] == torch_arg
    pyproject = (app_root / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{settings.app_version}"' in pyproject


def test_dockerfile_copies_only_existing_files(
    dockerfile: DockerfileParser, app_root: Path
) -> None:
    copies = [i for i in dockerfile.structure if i["instruction"] in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    for instruction in copies:
        parts = [p for p in shlex.split(instruction["value"]) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (app_root / source).exists(), f"COPY source missing: {source}"


def test_dockerfile_bakes_weights_with_the_hook(
    dockerfile: DockerfileParser, settings: AppSettings, manifest: dict
) -> None:
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    hook = next((run for run in runs if f"-m sly_vos.weights {settings.package}" in run), None)
    assert hook is not None, "the image must bake the weights with python -m sly_vos.weights"
    assert '--url "${WEIGHTS_URL}"' in hook and '--sha256 "${WEIGHTS_SHA256}"' in hook
    assert dockerfile.args["WEIGHTS_URL"] == (settings.weights_url or "")
    assert dockerfile.args["WEIGHTS_SHA256"] == (settings.weights_sha256 or "")
    cmd = next(i["value"] for i in dockerfile.structure if i["instruction"] == "CMD")
    assert "main:model.app" in cmd and str(manifest["port"]) in cmd


def test_workflow_uses_the_requirement_pins(app_root: Path) -> None:
    workflows = sorted((app_root / ".github" / "workflows").glob("*.yml"))
    if not workflows:
        pytest.skip("GitHub workflows were not included")
    text = "\n".join(w.read_text(encoding="utf-8") for w in workflows)
    assert "requirements.txt" in text and "supervisely==" not in text, (
        "workflows must read versions from requirements.txt"
    )


def test_image_has_what_the_sdk_needs_at_start(dockerfile: DockerfileParser) -> None:
    """python-magic (imported by supervisely) needs libmagic; without it every image exits
    at start. The arena cap keeps a long-running server's memory flat."""
    text = dockerfile.content
    assert re.search(r"\blibmagic1\b", text), "apt must install libmagic1"
    assert dockerfile.envs.get("MALLOC_ARENA_MAX") == "2"
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, re.MULTILINE), "no default base image"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE), "the base is not a build arg"


def test_image_leaves_development_tools_out(app_root: Path) -> None:
    ignored = (app_root / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"src/sly_vos/dev", "src/sly_vos/testing", "tests"} <= set(ignored)


def test_vendored_runtime_is_unmodified(app_root: Path) -> None:
    """``src/sly_vos`` is the template's runtime, copied verbatim: an edit there is lost (or
    conflicts) on the next ``cruft update``; change the runtime upstream instead."""
    runtime = app_root / "src" / "sly_vos"
    if runtime.is_symlink():
        pytest.skip("src/sly_vos links to the runtime's source (the template repository itself)")
    record = json.loads((runtime / "VENDORED.json").read_text(encoding="utf-8"))
    assert record["version"] == sly_vos.__version__
    present = {
        p.relative_to(runtime).as_posix()
        for p in runtime.rglob("*")
        if p.is_file() and p.name != "VENDORED.json" and "__pycache__" not in p.parts
    }
    assert present == set(record["files"]), "files were added to or removed from src/sly_vos"
    edited = [
        name
        for name, digest in record["files"].items()
        if hashlib.sha256((runtime / name).read_bytes()).hexdigest() != digest
    ]
    assert edited == [], f"src/sly_vos was edited ({', '.join(edited)}): run cruft update instead"
