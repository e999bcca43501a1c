"""The repository's own Python passes ruff: template tooling, the runtime (linted for Python
3.10, the CUDA images' python3) and the reference apps (each with its own, generated config)."""

from __future__ import annotations

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
def test_ruff_passes(folder: str, targets: list[str]) -> None:
    done = subprocess.run(
        [str(RUFF), "check", "--no-cache", *targets],
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
