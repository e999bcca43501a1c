"""How ``reference_xmem/`` relates to the template: rendered answers plus a declared model.

``reference_xmem/.cruft.json`` holds the answers (the same record every generated app
keeps; only its answers are compared, its template URL and commit say where an app came
from). Rendering them must give every file of ``reference_xmem/`` byte for byte, except the
files declared below: the template files the model fills in, and the model's own files.
The vendored runtime is not copied into the reference: ``src/sly_vos`` is a link to the one
copy in ``runtime/sly_vos``, and the rendered copy must equal it.
"""

from __future__ import annotations

import filecmp
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cookiecutter.main import cookiecutter

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT / "reference_xmem"
RUNTIME_DIR = REPO_ROOT / "runtime" / "sly_vos"
VENDORED = "src/sly_vos"  # in the reference: a link to RUNTIME_DIR
RECORD = ".cruft.json"  # compared by its answers only

# Template files replaced by the filled-in model.
FILLED_IN: tuple[str, ...] = ("src/serve_xmem/model.py",)
# Files the template does not have: the XMem package, its tests and notes.
ADDED: tuple[str, ...] = ("src/xmem/*", "tests/test_xmem_*.py", "tests/xmem_*.py", "XMEM.md")
# Never compared: caches and local state.
IGNORED: tuple[str, ...] = (
    f"{VENDORED}/*",  # checked on its own (see vendored_problems)
    RECORD,
    "*__pycache__*",
    "*.pyc",
    ".pytest_cache/*",
    ".ruff_cache/*",
    ".venv/*",
    "out/*",
    ".hypothesis/*",
)


def reference_answers(reference_dir: Path = REFERENCE_DIR) -> dict:
    record = json.loads((reference_dir / ".cruft.json").read_text("utf-8"))
    return record["context"]["cookiecutter"]


def render(answers: dict, output_dir: Path, template: Path = REPO_ROOT) -> Path:
    """Render the template with ``answers`` into ``output_dir``; returns the app folder."""
    return Path(
        cookiecutter(
            str(template),
            no_input=True,
            extra_context=answers,
            output_dir=str(output_dir),
            overwrite_if_exists=False,
        )
    )


@contextmanager
def rendered_reference(
    template: Path = REPO_ROOT, reference_dir: Path = REFERENCE_DIR
) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="render-reference-") as tmp:
        yield render(reference_answers(reference_dir), Path(tmp), template)


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def files_of(root: Path, ignored: tuple[str, ...] = IGNORED) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not _matches(p.relative_to(root).as_posix(), ignored)
    }


def vendored_problems(rendered: Path, reference: Path) -> list[str]:
    """The reference links to the one runtime; the rendered copy equals it file for file
    (plus the VENDORED.json record the post-gen hook writes)."""
    link = reference / VENDORED
    if not link.is_symlink() or link.resolve() != RUNTIME_DIR.resolve():
        return [f"{VENDORED} must be a link to runtime/sly_vos (make render-reference)"]
    copy = rendered / VENDORED
    skip = ("*__pycache__*", "*.pyc")
    source_files = files_of(RUNTIME_DIR, skip)
    copied = files_of(copy, skip) - {"VENDORED.json"}
    problems = [f"not vendored: {VENDORED}/{name}" for name in sorted(source_files - copied)]
    problems += [f"not in the runtime: {VENDORED}/{name}" for name in sorted(copied - source_files)]
    for name in sorted(source_files & copied):
        if not filecmp.cmp(RUNTIME_DIR / name, copy / name, shallow=False):
            problems.append(f"vendored copy differs: {VENDORED}/{name}")
    if not (copy / "VENDORED.json").is_file():
        problems.append(f"{VENDORED}/VENDORED.json was not written")
    return problems


def record_problems(rendered: Path, reference: Path) -> list[str]:
    """The answers recorded in both ``.cruft.json`` files are the same."""
    theirs = json.loads((rendered / RECORD).read_text("utf-8"))["context"]["cookiecutter"]
    ours = json.loads((reference / RECORD).read_text("utf-8"))["context"]["cookiecutter"]
    return [] if theirs == ours else [f"{RECORD}: the recorded answers differ"]


def differences(rendered: Path, reference: Path) -> list[str]:
    """Every way ``reference`` differs from ``rendered`` beyond the declared model files."""
    problems = vendored_problems(rendered, reference) + record_problems(rendered, reference)
    rendered_files, reference_files = files_of(rendered), files_of(reference)
    for relative in sorted(rendered_files - reference_files):
        problems.append(f"missing in reference: {relative}")
    for relative in sorted(reference_files - rendered_files):
        if not _matches(relative, ADDED):
            problems.append(f"not from the template and not declared: {relative}")
    for relative in sorted(rendered_files & reference_files):
        if relative in FILLED_IN:
            continue
        if not filecmp.cmp(rendered / relative, reference / relative, shallow=False):
            problems.append(f"differs from the template: {relative}")
    for relative in FILLED_IN:
        if relative not in rendered_files:
            problems.append(f"declared filled-in file is not in the template: {relative}")
    return problems


def sync(rendered: Path, reference: Path) -> list[str]:
    """Make ``reference`` what the template renders, keeping the declared model files, its
    ``.cruft.json`` and the link to the runtime."""
    changed = []
    link = reference / VENDORED
    if not link.is_symlink():
        if link.is_dir():
            shutil.rmtree(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(RUNTIME_DIR, link.parent))
        changed.append(f"linked {VENDORED}")
    for relative in sorted(files_of(rendered)):
        target = reference / relative
        if relative in FILLED_IN and target.exists():
            continue
        source = rendered / relative
        if not target.exists() or not filecmp.cmp(source, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            changed.append(relative)
    for relative in sorted(files_of(reference) - files_of(rendered)):
        if not _matches(relative, ADDED):
            (reference / relative).unlink()
            changed.append(f"removed {relative}")
    return changed
