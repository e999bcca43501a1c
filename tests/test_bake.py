"""Bake every named option combination and check what comes out."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.baking import COMBINATIONS, BakedProject, parse_structured_files
from tests.settings_file import settings_literals

SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "supervisely_app_manifest.schema.json").read_text("utf-8")
)
# Jinja left in a generated file means a variable was not rendered. GitHub's ``${{ }}``
# expressions are meant to survive, and so are Python f-string escapes (``{{name}}``, no
# space: the template writes every Jinja variable as ``{{ name }}``).
UNRENDERED_RE = re.compile(r"(?<!\$)\{\{\s|\{%|\{#|\bcookiecutter\.[a-z_]")
BIN = Path(sys.executable).parent


@pytest.fixture(params=list(COMBINATIONS), ids=list(COMBINATIONS))
def baked(request: pytest.FixtureRequest, bake) -> BakedProject:
    project = bake(**COMBINATIONS[request.param])
    assert project.ok, project.exception
    return project


def test_bake_succeeds_with_expected_layout(baked: BakedProject) -> None:
    ctx = baked.context
    assert baked.path.name == ctx["app_slug"]
    for relative in (
        "config.json",
        "docker/Dockerfile",
        "requirements.txt",
        "requirements-dev.txt",
        "pyproject.toml",
        "README.md",
        "debug.env.example",
        ".vscode/launch.json",
        ".gitignore",
        ".cruft.json",
        "src/main.py",
        f"src/{ctx['__package_name']}/app.py",
        f"src/{ctx['__package_name']}/model.py",
        f"src/{ctx['__package_name']}/settings.py",
        "src/sly_vos/__init__.py",
        "src/sly_vos/VENDORED.json",
        "tests/conftest.py",
        "tests/test_model.py",
    ):
        assert (baked.path / relative).is_file(), relative
    leftovers = [p.name for p in baked.package.glob("model_*.py")]
    assert leftovers == [], "unchosen starters must be removed"
    runtime = baked.path / "src" / "sly_vos"
    assert not runtime.is_symlink(), "the runtime is copied into the app, not linked"
    assert not list(runtime.rglob("__pycache__")), "caches are not vendored"
    assert not (baked.path / "licenses").exists()
    assert (baked.path / "LICENSE").exists() is (ctx["license"] != "Proprietary")
    assert (baked.path / ".github").exists() is ctx["include_github_workflows"]


def test_no_unrendered_jinja(baked: BakedProject) -> None:
    offenders = []
    for path in baked.files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary sample data
        for number, line in enumerate(text.splitlines(), 1):
            if UNRENDERED_RE.search(line):
                offenders.append(f"{path.relative_to(baked.path)}:{number}: {line.strip()}")
    assert offenders == []


def test_structured_files_parse(baked: BakedProject) -> None:
    parse_structured_files(baked.path)


def test_free_text_is_preserved(baked: BakedProject) -> None:
    ctx = baked.context
    manifest = baked.json("config.json")
    assert manifest["name"] == ctx["app_name"]
    assert manifest["description"] == ctx["description"]
    pyproject = tomllib.loads(baked.read("pyproject.toml"))
    assert pyproject["project"]["description"] == ctx["description"]
    assert pyproject["project"]["authors"][0]["name"] == ctx["author"]
    settings = settings_literals(baked.read(f"src/{ctx['__package_name']}/settings.py"))
    assert settings["model_name"] == ctx["model_name"]
    assert "app_name" not in settings  # the runtime never reads it: config.json holds it
    assert settings["weights_url"] == (ctx["weights_url"] or None)
    assert settings["weights_sha256"] == (ctx["weights_sha256"] or None)
    recorded = baked.json(".cruft.json")["context"]["cookiecutter"]
    for key in ("model_name", "app_name", "description", "author"):
        assert recorded[key] == ctx[key]


def test_manifest_matches_schema_and_answers(baked: BakedProject) -> None:
    ctx = baked.context
    manifest = baked.json("config.json")
    jsonschema.validate(manifest, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert manifest["docker_image"] == f"{ctx['docker_image']}:{ctx['app_version']}"
    assert manifest["port"] == int(ctx["port"])
    assert manifest["instance_version"] == ctx["instance_version"]
    assert manifest["need_gpu"] is (ctx["gpu"] == "required")
    assert manifest.get("gpu") == (None if ctx["gpu"] == "no" else ctx["gpu"])
    assert manifest["session_tags"] == ["sly_video_tracking"]


def test_dockerfile_lints_and_copies_existing_files(baked: BakedProject) -> None:
    dockerfile = baked.path / "docker" / "Dockerfile"
    lint = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    parser = DockerfileParser(path=str(dockerfile))
    ctx = baked.context
    assert parser.baseimage == ctx["__cuda_base_image"]
    assert parser.labels["python_sdk_version"] == ctx["sdk_version"]
    assert parser.args["TORCH_VERSION"] == ctx["torch_version"]
    assert parser.args["TORCH_INDEX_URL"].endswith("cu" + ctx["cuda_version"].replace(".", ""))
    for instruction in parser.structure:
        if instruction["instruction"] in ("COPY", "ADD"):
            parts = [p for p in shlex.split(instruction["value"]) if not p.startswith("--")]
            for source in parts[:-1]:
                assert (baked.path / source).exists(), source


def test_python_compiles_and_passes_ruff(baked: BakedProject) -> None:
    compiled = subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(baked.path / "src"),
            str(baked.path / "tests"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    for command in (["check"], ["format", "--check"]):  # a new app starts formatted
        ruff = subprocess.run(
            [str(BIN / "ruff"), *command, "--no-cache", "src", "tests"],
            cwd=baked.path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_requirements_pin_the_answers(baked: BakedProject) -> None:
    ctx = baked.context
    requirements = baked.read("requirements.txt").splitlines()
    assert f"supervisely=={ctx['sdk_version']}" in requirements
    assert f"torch=={ctx['torch_version']}" in requirements


def test_workflow_expressions_survive(bake) -> None:
    project = bake(include_github_workflows=True)
    text = project.read(".github/workflows/ci.yml")
    assert "${{ github.run_id }}" in text
    yaml.safe_load(text)


def test_unknown_answer_keys_are_refused(bake) -> None:
    from tests.baking import UnknownAnswerError

    with pytest.raises(UnknownAnswerError, match="startr_model"):
        bake(startr_model="stub")


def test_defaults_name_no_model_weights(bake) -> None:
    """A bake for any model starts without someone else's weights: no URL, nothing to
    download, and the weights file named neutrally (XMem's answers live in reference_xmem)."""
    baked = bake(model_name="Cutie", starter_model="stub")
    assert baked.ok, baked.exception
    settings = settings_literals(baked.read("src/serve_cutie/settings.py"))
    assert settings["weights_url"] is None
    assert settings["weights_sha256"] is None
    assert settings["weights_filename"] == "weights.pth"
    dockerfile = baked.read("docker/Dockerfile")
    assert "ARG WEIGHTS_URL=\n" in dockerfile
    runtime = baked.path / "src" / "sly_vos"  # its docs may cite XMem measurements
    for path in baked.files():
        if runtime not in path.parents and path.suffix in {".py", ".md", ".json", ".toml", ""}:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "XMem" not in text, f"{path.relative_to(baked.path)} names XMem"
