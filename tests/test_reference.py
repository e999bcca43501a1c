"""Each reference app (``reference_xmem/``, ``reference_sam2/``) is exactly what the template
renders with its answers, plus its declared model files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reference_instance import (
    REFERENCES,
    REPO_ROOT,
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
        "(or change the declared files in tests/reference_instance.py):\n" + "\n".join(problems)
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
