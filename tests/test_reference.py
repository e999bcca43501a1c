"""``reference_xmem/`` is exactly what the template renders with its answers, plus the model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reference_instance import (
    FILLED_IN,
    REFERENCE_DIR,
    REPO_ROOT,
    differences,
    reference_answers,
    render,
    rendered_reference,
)


def test_reference_is_the_rendered_template_plus_the_model() -> None:
    with rendered_reference() as rendered:
        problems = differences(rendered, REFERENCE_DIR)
    assert problems == [], (
        "reference_xmem/ drifted from the template; run `make render-reference` "
        "(or change the declared files in tests/reference_instance.py):\n" + "\n".join(problems)
    )


def test_reference_answers_are_the_xmem_answers() -> None:
    answers = reference_answers()
    assert answers["model_name"] == "XMem"
    assert answers["weights_url"] == (
        "https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth"
    )
    assert answers["gpu"] == "preferred"


def test_filled_in_model_differs_from_the_stub() -> None:
    with rendered_reference() as rendered:
        for relative in FILLED_IN:
            assert (rendered / relative).read_bytes() != (REFERENCE_DIR / relative).read_bytes()


@pytest.fixture
def reference_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "reference"
    shutil.copytree(
        REFERENCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")
    )
    return copy


def test_editing_the_reference_alone_is_caught(reference_copy: Path) -> None:
    config = reference_copy / "config.json"
    config.write_text(config.read_text("utf-8").replace('"headless": true', '"headless": false'))
    (reference_copy / "src" / "serve_xmem" / "extra.py").write_text("X = 1\n")
    with rendered_reference(reference_dir=reference_copy) as rendered:
        problems = differences(rendered, reference_copy)
    assert "differs from the template: config.json" in problems
    assert "not from the template and not declared: src/serve_xmem/extra.py" in problems


def test_editing_the_template_alone_is_caught(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(
        REPO_ROOT,
        template,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "reference_xmem", "out", "__pycache__", "benchmarks", "docs"
        ),
    )
    dockerfile = template / "{{cookiecutter.app_slug}}" / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text("utf-8") + "# edited\n")
    rendered = render(reference_answers(), tmp_path / "out", template=template)
    assert "differs from the template: docker/Dockerfile" in differences(rendered, REFERENCE_DIR)


def test_reference_copied_alone_tests_and_builds_its_context(tmp_path: Path) -> None:
    """reference_xmem/ copied out of the repository (as a user copies or pushes it) has all
    it needs: the runtime is a real copy, the XMem fixtures are inside, nothing reads ``..``.
    Runs the tests that read its fixtures and check its runtime copy there, outside the
    repository."""
    copy = tmp_path / "serve-xmem"
    shutil.copytree(
        REFERENCE_DIR,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"),
    )
    links = [p for p in copy.rglob("*") if p.is_symlink()]
    assert links == [], f"links that leave the folder behind: {links}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI")}
    # the fixture files (state-dict layout, golden weights manifest) and the manifest suite,
    # which checks the vendored runtime against its record (collected through tests/)
    selected = "state_dict_matches_upstream or recipe_is_bit_exact or test_manifest"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selected],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" not in summary and "deselected" in summary, summary
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed[1]) >= 12, summary  # 2 fixture tests + the manifest suite
