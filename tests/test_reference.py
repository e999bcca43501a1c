"""Each reference app (``reference_xmem/``, ``reference_sam2/``) is exactly what the template
renders with its answers, plus its declared model files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repo_tools import REPO_ROOT
from repo_tools.reference import (
    REFERENCES,
    SAM2,
    XMEM,
    Reference,
    differences,
    reference_answers,
    render,
    rendered_reference,
)

BY_NAME = pytest.mark.parametrize("ref", REFERENCES, ids=[ref.name for ref in REFERENCES])


@BY_NAME
def test_reference_is_the_rendered_template_plus_the_model(ref: Reference) -> None:
    with rendered_reference(reference_dir=ref.root) as rendered:
        problems = differences(rendered, ref.root, ref)
    assert problems == [], (
        f"{ref.name}/ drifted from the template; run `make render-reference` "
        "(or change the declared files in repo_tools/reference.py):\n" + "\n".join(problems)
    )


def test_reference_answers_are_the_xmem_answers() -> None:
    answers = reference_answers(XMEM.root)
    assert answers["model_name"] == "XMem"
    assert answers["weights_url"] == (
        "https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth"
    )
    assert answers["gpu"] == "preferred"


def test_reference_answers_are_the_sam2_answers() -> None:
    answers = reference_answers(SAM2.root)
    assert (answers["model_name"], answers["app_slug"]) == ("SAM 2.1", "serve-sam2")
    assert answers["weights_url"] == ""  # checkpoints come from the Hub, not one URL
    assert answers["license"] == "Apache-2.0"  # SAM 2's licence


def test_sam2_pins_transformers_exactly() -> None:
    lines = (SAM2.root / "requirements.txt").read_text("utf-8").splitlines()
    assert "transformers==5.23.0" in lines
    assert not [line for line in lines if line.startswith(("torchvision", "sam2"))]


@BY_NAME
def test_filled_in_files_differ_from_the_template(ref: Reference) -> None:
    with rendered_reference(reference_dir=ref.root) as rendered:
        for relative in ref.filled_in:
            assert (rendered / relative).read_bytes() != (ref.root / relative).read_bytes()


def copy_of(ref: Reference, tmp_path: Path) -> Path:
    copy = tmp_path / ref.name
    shutil.copytree(ref.root, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return copy


@BY_NAME
def test_editing_the_reference_alone_is_caught(ref: Reference, tmp_path: Path) -> None:
    copy = copy_of(ref, tmp_path)
    config = copy / "config.json"
    config.write_text(config.read_text("utf-8").replace('"headless": true', '"headless": false'))
    package = reference_answers(ref.root)["app_slug"].replace("-", "_")
    (copy / "src" / package / "extra.py").write_text("X = 1\n")
    with rendered_reference(reference_dir=copy) as rendered:
        problems = differences(rendered, copy, ref)
    assert "differs from the template: config.json" in problems
    assert f"not from the template and not declared: src/{package}/extra.py" in problems


def test_editing_the_template_alone_is_caught(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(
        REPO_ROOT,
        template,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            *(ref.name for ref in REFERENCES),
            "out",
            "__pycache__",
            "benchmarks",
            "docs",
        ),  # fmt: skip
    )
    dockerfile = template / "{{cookiecutter.app_slug}}" / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text("utf-8") + "# edited\n")
    for ref in REFERENCES:
        rendered = render(reference_answers(ref.root), tmp_path / f"out-{ref.name}", template)
        assert "differs from the template: docker/Dockerfile" in differences(
            rendered, ref.root, ref
        )


# Per reference app: tests that read its own fixtures (XMem: the state-dict layout and the
# golden weights manifest), with the manifest suite, which checks the vendored runtime.
STANDALONE_TESTS = {
    "reference_xmem": "state_dict_matches_upstream or recipe_is_bit_exact or test_manifest",
    "reference_sam2": "test_manifest",
}


@BY_NAME
def test_reference_copied_alone_tests_and_builds_its_context(
    ref: Reference, tmp_path: Path
) -> None:
    """A reference app copied out of the repository (as a user copies or pushes it) has all
    it needs: the runtime is a real copy, its fixtures are inside, nothing reads ``..``.
    Runs the tests that read its fixtures and check its runtime copy there."""
    copy = tmp_path / ref.name
    shutil.copytree(
        ref.root,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"),
    )
    links = [p for p in copy.rglob("*") if p.is_symlink()]
    assert links == [], f"links that leave the folder behind: {links}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI")}
    selected = STANDALONE_TESTS[ref.name]
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
    assert passed and int(passed[1]) >= 10, summary  # at least the manifest suite
