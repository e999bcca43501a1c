"""The repository's own Python passes ruff, lint and format alike: template tooling, the
runtime (linted for Python 3.10, the CUDA images' python3) and the reference apps (each with
its own, generated config; their rendered files are formatted because the template renders
formatted code, see test_bake)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.baking import REPO_ROOT

RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize(
    ("folder", "targets"),
    [
        (".", ["tests", "repo_tools", "scripts", "benchmarks", "local_extensions.py"]),
        ("runtime", ["."]),
        ("reference_xmem", ["src", "tests"]),
        ("reference_sam2", ["src", "tests"]),
    ],
    ids=["template-tooling", "runtime", "reference_xmem", "reference_sam2"],
)
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(folder: str, targets: list[str], command: list[str]) -> None:
    done = subprocess.run(
        [str(RUFF), *command, "--no-cache", *targets],
        cwd=REPO_ROOT / folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_repository_has_no_symbolic_links() -> None:
    """A link breaks a Docker build context, a copy of an app folder, a zip and a Windows
    checkout: every app carries real files (the runtime is copied in, never linked)."""
    listed = subprocess.run(
        ["git", "ls-files", "-s", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    links = [entry.split("\t", 1)[1] for entry in listed.split("\0") if entry.startswith("120000")]
    assert links == [], f"symbolic links in the repository: {links}"


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py"))


# Built from parts, so that this file does not match itself.
PATH_EDIT = re.compile(r"sys\.path\s*(\.\s*(insert|append)\b|\[|\+?=)")
TESTS_IMPORT = re.compile(r"^\s*(from|import)\s+tests\b", re.MULTILINE)
RENDER_CALL = re.compile(r"(?<![`.\w])cookie" + r"cutter\(")  # a call, not its mention


def test_tooling_has_one_way_to_import_render_and_serve() -> None:
    """``repo_tools`` is installed: nothing in scripts, benchmarks or tests edits
    ``sys.path`` (``repo_tools.on_sys_path`` is the one place), nothing outside ``tests/``
    imports from it, and ``repo_tools.baking.bake`` is the one call of cookiecutter's API."""
    tooling = python_files("scripts", "benchmarks", "tests", "runtime/tests", "repo_tools")
    helper = REPO_ROOT / "repo_tools" / "__init__.py"
    edits = [p for p in tooling if p != helper and PATH_EDIT.search(p.read_text("utf-8"))]
    outside = [p for p in python_files("scripts", "benchmarks", "repo_tools")
               if TESTS_IMPORT.search(p.read_text("utf-8"))]  # fmt: skip
    bake = REPO_ROOT / "repo_tools" / "baking.py"
    renders = [p for p in tooling if p != bake and RENDER_CALL.search(p.read_text("utf-8"))]
    assert edits == [], f"sys.path edited outside repo_tools.on_sys_path: {edits}"
    assert outside == [], f"imports from tests/ outside tests/: {outside}"
    assert renders == [], f"the template rendered without repo_tools.baking.bake: {renders}"
