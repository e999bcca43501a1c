"""The user's room stays small: a baked app owns a few short files, the runtime is vendored.

Counted: the Python lines a person plugging in a model owns (``src/<pkg>/``, ``src/main.py``,
``tests/``); not counted: ``src/sly_vos/`` (the runtime, updated by ``cruft update``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.baking import BakedProject

MAX_APP_LINES = 700
OWNED_FILES = {
    "src/main.py",
    "src/{pkg}/__init__.py",
    "src/{pkg}/app.py",
    "src/{pkg}/model.py",
    "src/{pkg}/settings.py",
    "tests/conftest.py",
    "tests/test_model.py",
}


def owned_python(project: BakedProject) -> dict[str, int]:
    """Line count of every Python file the app owns, by path relative to the app."""
    root = project.path
    assert root is not None
    package = project.context["__package_name"]
    files = [root / "src" / "main.py", *(root / "src" / package).rglob("*.py")]
    files += (root / "tests").rglob("*.py")
    return {p.relative_to(root).as_posix(): len(p.read_text("utf-8").splitlines()) for p in files}


@pytest.mark.parametrize("answers", [{}, {"starter_model": "stub"}], ids=["default", "stub"])
def test_the_app_owns_few_small_files(bake, answers: dict) -> None:
    project = bake(**answers)
    assert project.ok, project.exception
    lines = owned_python(project)
    package = project.context["__package_name"]
    assert set(lines) == {name.format(pkg=package) for name in OWNED_FILES}
    total = sum(lines.values())
    print(f"{answers or 'default'}: {total} app-owned Python lines: {lines}")
    assert total <= MAX_APP_LINES, lines


def test_the_runtime_is_not_in_the_apps_package(bake) -> None:
    project = bake()
    runtime = Path(project.path) / "src" / "sly_vos"
    assert (runtime / "app.py").is_file() and (runtime / "VENDORED.json").is_file()
    assert not (project.package / "sly_vos").exists()
