"""The manifest, Dockerfile, requirements and launch config agree with each other.

No Docker engine is needed: the Dockerfile is parsed, every file it copies must exist, and
every version that appears in several places must be the same everywhere.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from serve_xmem import settings

ENTRYPOINT_RE = re.compile(
    r"^python -m uvicorn main:model\.app --app-dir \./src --host 0\.0\.0\.0 "
    r"--port (?P<port>[0-9]+) --ws websockets$"
)


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


def test_manifest_has_what_supervisely_needs(manifest: dict) -> None:
    assert manifest["type"] == "app"
    assert "sly_video_tracking" in manifest["session_tags"]
    assert {"bitmap", "polygon"} <= set(manifest["allowed_shapes"])
    assert manifest["task_location"] == "application_sessions"
    assert manifest["headless"] is True
    assert {"videos", "segmentation & tracking", "serve"} <= set(manifest["categories"])
    assert manifest["name"] == settings.APP_NAME


def test_entrypoint_port_and_launch_config_agree(manifest: dict, app_root: Path) -> None:
    match = ENTRYPOINT_RE.match(manifest["entrypoint"])
    assert match, manifest["entrypoint"]
    assert int(match["port"]) == manifest["port"] == settings.PORT
    launch = json.loads((app_root / ".vscode" / "launch.json").read_text(encoding="utf-8"))
    serve = launch["configurations"][0]
    assert serve["module"] == "uvicorn"
    expected_args = shlex.split(manifest["entrypoint"])[3:]
    assert serve["args"] == expected_args


def test_gpu_policy(manifest: dict) -> None:
    if settings.GPU == "no":
        assert "gpu" not in manifest and manifest["need_gpu"] is False
    else:
        assert manifest["gpu"] == settings.GPU
        assert manifest["need_gpu"] is (settings.GPU == "required")


def test_versions_have_one_value_everywhere(
    manifest: dict, dockerfile: DockerfileParser, app_root: Path
) -> None:
    pins = requirement_pins(app_root / "requirements.txt")
    assert pins["supervisely"] == settings.SDK_VERSION
    assert dockerfile.labels["python_sdk_version"] == settings.SDK_VERSION
    image, tag = manifest["docker_image"].rsplit(":", 1)
    assert tag == settings.APP_VERSION
    assert image in (app_root / "docker" / "Dockerfile").read_text(encoding="utf-8")
    torch_arg = dockerfile.args["TORCH_VERSION"]
    assert pins["torch"] == torch_arg
    pyproject = (app_root / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{settings.APP_VERSION}"' in pyproject


def test_dockerfile_copies_only_existing_files(
    dockerfile: DockerfileParser, app_root: Path
) -> None:
    copies = [i for i in dockerfile.structure if i["instruction"] in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    for instruction in copies:
        parts = [p for p in shlex.split(instruction["value"]) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (app_root / source).exists(), f"COPY source missing: {source}"


def test_dockerfile_bakes_weights_with_the_app_hook(dockerfile: DockerfileParser) -> None:
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    assert any(f"-m {settings.PACKAGE}.weights" in run for run in runs)
    cmd = next(i["value"] for i in dockerfile.structure if i["instruction"] == "CMD")
    assert "main:model.app" in cmd and str(settings.PORT) in cmd


def test_workflow_uses_the_requirement_pins(app_root: Path) -> None:
    workflows = sorted((app_root / ".github" / "workflows").glob("*.yml"))
    if not workflows:
        pytest.skip("GitHub workflows were not included")
    text = "\n".join(w.read_text(encoding="utf-8") for w in workflows)
    assert "requirements.txt" in text and "supervisely==" not in text, (
        "workflows must read versions from requirements.txt"
    )
