"""Bake and run: the generated app installs in a fresh venv outside this repository and
passes its own tests (the runtime's suites included) with the repository not importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.baking import REPO_ROOT, BakedProject


def run(cmd: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    output = result.stdout[-6000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output}"
    return output


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    return env


@pytest.mark.slow
def test_default_app_installs_in_a_fresh_venv_and_passes_its_tests(bake, tmp_path: Path) -> None:
    project: BakedProject = bake()
    assert project.ok, project.exception
    venv = tmp_path / "venv"
    env = clean_env()
    run([sys.executable, "-m", "venv", str(venv)], project.path, 120, env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch_pin = f"torch=={project.context['torch_version']}"
    run([*pip, torch_pin], project.path, 900, env)  # exact pin first (see README)
    run([*pip, "-r", "requirements-dev.txt"], project.path, 1200, env)
    python = str(venv / "bin" / "python")
    where = run(
        [python, "-c", "import sys, sly_vos; print(sly_vos.__file__); print(sys.path)"],
        project.path,
        120,
        {**env, "PYTHONPATH": "src"},
    )
    assert where.splitlines()[0].startswith(str(project.path / "src" / "sly_vos"))
    assert str(REPO_ROOT) not in where, "the template repository must not be importable"
    assert not project.path.is_relative_to(REPO_ROOT)
    # --long: the full-HD variants too (cheap with the optical-flow starter), so every test
    # of the app runs here; nothing may be deselected.
    pytest_cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--long"]
    output = run(pytest_cmd, project.path, 1200, env)
    assert " passed" in output and " failed" not in output and "xpass" not in output.lower()
    assert "deselected" not in output and "long variant" not in output, output[-2000:]
    run([str(venv / "bin" / "ruff"), "check", "--no-cache", "src", "tests"], project.path, 120, env)


@pytest.mark.slow
def test_stub_app_serves_and_its_tests_pass(bake) -> None:
    project: BakedProject = bake(starter_model="stub")
    assert project.ok, project.exception
    output = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rx"],
        project.path,
        900,
        clean_env(),
    )
    assert " passed" in output and " failed" not in output and "xpass" not in output.lower()
    assert "xfail" in output, "the stub's tracking tests are expected to fail (strictly)"
