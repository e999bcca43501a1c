"""Updates that work: an app baked the way the README says takes a template change with
``cruft update`` and passes ``cruft check`` afterwards; the recorded answers carry the
template's real commit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.baking import REPO_ROOT

CRUFT = Path(sys.executable).parent / "cruft"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
}  # fmt: skip


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def copy_working_tree(target: Path) -> Path:
    """The template as it is now (tracked and new files, links kept), as a fresh git repo."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], REPO_ROOT)
    for name in filter(None, listed.split("\0")):
        source, dest = REPO_ROOT / name, target / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, dest)
    run(["git", "init", "-q", "-b", "main"], target)
    run(["git", "add", "-A"], target)
    run(["git", "commit", "-q", "-m", "template"], target)
    return target


def head(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], repo).strip()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_working_tree(tmp_path_factory.mktemp("template"))


def test_plain_cookiecutter_records_the_template_commit(template: Path, tmp_path: Path) -> None:
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    run([str(cookiecutter), str(template), "--no-input", "-o", str(tmp_path)], tmp_path)
    record = json.loads((tmp_path / "serve-myvos" / ".cruft.json").read_text("utf-8"))
    assert record["commit"] == head(template)
    assert Path(record["template"]) == template.resolve()
    vendored = json.loads(
        (tmp_path / "serve-myvos" / "src" / "sly_vos" / "VENDORED.json").read_text("utf-8")
    )
    assert vendored["commit"] == head(template)


@pytest.mark.slow
def test_cruft_update_carries_a_template_change_into_the_app(
    template: Path, tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    run([str(CRUFT), "create", str(template), "--no-input"], apps)  # as the README says
    app = apps / "serve-myvos"
    assert json.loads((app / ".cruft.json").read_text("utf-8"))["commit"] == head(template)
    run(["git", "init", "-q", "-b", "main"], app)
    run(["git", "add", "-A"], app)
    run(["git", "commit", "-q", "-m", "baked"], app)

    readme = template / "{{cookiecutter.app_slug}}" / "README.md"
    readme.write_text(readme.read_text("utf-8") + "\nA line the template added later.\n")
    limits = template / "runtime" / "sly_vos" / "limits.py"
    limits.write_text(limits.read_text("utf-8") + "# a runtime change\n")
    run(["git", "commit", "-q", "-am", "template change"], template)

    run([str(CRUFT), "update", "-y"], app)
    assert "A line the template added later." in (app / "README.md").read_text("utf-8")
    vendored_limits = app / "src" / "sly_vos" / "limits.py"
    assert vendored_limits.read_text("utf-8").endswith("# a runtime change\n")
    record = json.loads((app / "src" / "sly_vos" / "VENDORED.json").read_text("utf-8"))
    digest = hashlib.sha256(vendored_limits.read_bytes()).hexdigest()
    assert record["files"]["limits.py"] == digest, "the vendored record follows the update"
    assert json.loads((app / ".cruft.json").read_text("utf-8"))["commit"] == head(template)
    run([str(CRUFT), "check"], app)
