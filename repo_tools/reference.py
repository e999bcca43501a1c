"""How the reference apps relate to the template: rendered answers plus a declared model.

There are two: ``reference_xmem/`` (our own XMem package) and ``reference_sam2/`` (SAM 2.1
on transformers). Each one's ``.cruft.json`` holds the answers (the same record every
generated app keeps; only its answers are compared, its template URL and commit say where an
app came from). Rendering them (``repo_tools.baking.bake``, the one way the repository renders
the template) must give every file of the reference byte for byte, except the files its
``Reference`` declares below: the template files the model fills in, and the model's own files.
The vendored runtime ``src/sly_vos`` is a real copy, as in every generated app (the folder is
a Docker build context and may be copied or pushed on its own): it must equal
``runtime/sly_vos`` byte for byte, and its ``VENDORED.json`` the record a render writes, but
for where it came from (the reference's own ``.cruft.json`` says that).

Here, not in ``tests/``, because ``scripts/render_reference.py`` syncs the references with it
and the reference test checks them with it.
"""

from __future__ import annotations

import filecmp
import fnmatch
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import REPO_ROOT, RUNTIME_DIR
from .baking import RECORD, bake

RUNTIME_PACKAGE = RUNTIME_DIR / "sly_vos"
VENDORED = "src/sly_vos"  # a verbatim copy of RUNTIME_PACKAGE
VENDORED_RECORD = "VENDORED.json"  # written by the post-gen hook


@dataclass(frozen=True)
class Reference:
    """One reference app: its folder and the files that are not the template's."""

    name: str  # the folder under the repository root
    filled_in: tuple[str, ...]  # template files replaced by the filled-in model
    added: tuple[str, ...]  # files the template does not have (glob patterns)

    @property
    def root(self) -> Path:
        return REPO_ROOT / self.name


XMEM = Reference(
    "reference_xmem",
    filled_in=("src/serve_xmem/model.py",),
    # The XMem package, its tests and notes.
    added=("src/xmem/*", "tests/test_xmem_*.py", "tests/xmem_*.py", "tests/data/*", "XMEM.md"),
)
SAM2 = Reference(
    "reference_sam2",
    # The model, and transformers pinned next to the SDK.
    filled_in=("src/serve_sam2/model.py", "requirements.txt"),
    added=("tests/test_sam2_*.py", "tests/sam2_*.py", "SAM2.md"),
)
REFERENCES: tuple[Reference, ...] = (XMEM, SAM2)
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


def reference_answers(reference_dir: Path = XMEM.root) -> dict[str, Any]:
    """The answers a reference app (or any generated app) recorded in its ``.cruft.json``."""
    record = json.loads((reference_dir / RECORD).read_text("utf-8"))
    return record["context"]["cookiecutter"]


def render(answers: dict[str, Any], output_dir: Path, template: Path = REPO_ROOT) -> Path:
    """Render the template with ``answers`` into ``output_dir``; returns the app folder."""
    return bake(output_dir, answers, template=template).root


@contextmanager
def rendered_reference(
    template: Path = REPO_ROOT, reference_dir: Path = XMEM.root
) -> Iterator[Path]:
    """The template rendered with a reference's answers, in a folder removed afterwards."""
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


def _runtime_files(root: Path) -> set[str]:
    return files_of(root, ("*__pycache__*", "*.pyc", VENDORED_RECORD))


def vendored_record(rendered: Path, reference: Path) -> dict[str, Any]:
    """The rendered ``VENDORED.json``, sourced as the reference's ``.cruft.json`` says (a
    render records this machine's checkout and commit, the reference its published URL)."""
    record = json.loads((rendered / VENDORED / VENDORED_RECORD).read_text("utf-8"))
    source = json.loads((reference / RECORD).read_text("utf-8"))
    return record | {"template": source["template"], "commit": source["commit"]}


def vendored_problems(rendered: Path, reference: Path) -> list[str]:
    """The reference's runtime is a real copy equal to ``runtime/sly_vos`` file for file, and
    its record equals the one a render writes."""
    copy = reference / VENDORED
    if copy.is_symlink() or not copy.is_dir():
        return [f"{VENDORED} must be a real copy of runtime/sly_vos (make render-reference)"]
    source_files, copied = _runtime_files(RUNTIME_PACKAGE), _runtime_files(copy)
    problems = [f"not vendored: {VENDORED}/{name}" for name in sorted(source_files - copied)]
    problems += [f"not in the runtime: {VENDORED}/{name}" for name in sorted(copied - source_files)]
    for name in sorted(source_files & copied):
        if not filecmp.cmp(RUNTIME_PACKAGE / name, copy / name, shallow=False):
            problems.append(f"vendored copy differs: {VENDORED}/{name}")
    record = copy / VENDORED_RECORD
    if not record.is_file():
        problems.append(f"{VENDORED}/{VENDORED_RECORD} is missing")
    elif json.loads(record.read_text("utf-8")) != vendored_record(rendered, reference):
        problems.append(f"{VENDORED}/{VENDORED_RECORD} differs from the rendered record")
    return problems


def record_problems(rendered: Path, reference: Path) -> list[str]:
    """The answers recorded in both ``.cruft.json`` files are the same."""
    theirs = json.loads((rendered / RECORD).read_text("utf-8"))["context"]["cookiecutter"]
    ours = json.loads((reference / RECORD).read_text("utf-8"))["context"]["cookiecutter"]
    return [] if theirs == ours else [f"{RECORD}: the recorded answers differ"]


def differences(rendered: Path, reference: Path, spec: Reference = XMEM) -> list[str]:
    """Every way ``reference`` (a folder laid out as ``spec``) differs from ``rendered``
    beyond the model files ``spec`` declares."""
    problems = vendored_problems(rendered, reference) + record_problems(rendered, reference)
    rendered_files, reference_files = files_of(rendered), files_of(reference)
    for relative in sorted(rendered_files - reference_files):
        problems.append(f"missing in reference: {relative}")
    for relative in sorted(reference_files - rendered_files):
        if not _matches(relative, spec.added):
            problems.append(f"not from the template and not declared: {relative}")
    for relative in sorted(rendered_files & reference_files):
        if relative in spec.filled_in:
            continue
        if not filecmp.cmp(rendered / relative, reference / relative, shallow=False):
            problems.append(f"differs from the template: {relative}")
    for relative in spec.filled_in:
        if relative not in rendered_files:
            problems.append(f"declared filled-in file is not in the template: {relative}")
    return problems


def sync_runtime(rendered: Path, reference: Path) -> list[str]:
    """Make the reference's ``src/sly_vos`` the rendered copy, with its record re-sourced."""
    copy = reference / VENDORED
    record = vendored_record(rendered, reference)
    text = json.dumps(record, indent=2) + "\n"
    if not vendored_problems(rendered, reference):
        return []
    if copy.is_symlink() or copy.is_file():
        copy.unlink()
    elif copy.is_dir():
        shutil.rmtree(copy)
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", VENDORED_RECORD)
    shutil.copytree(RUNTIME_PACKAGE, copy, ignore=ignored)
    (copy / VENDORED_RECORD).write_text(text, encoding="utf-8")
    return [f"copied runtime/sly_vos to {VENDORED}"]


def sync(rendered: Path, reference: Path, spec: Reference = XMEM) -> list[str]:
    """Make ``reference`` what the template renders, keeping the model files ``spec``
    declares and its ``.cruft.json``."""
    changed = sync_runtime(rendered, reference)
    for relative in sorted(files_of(rendered)):
        target = reference / relative
        if relative in spec.filled_in and target.exists():
            continue
        source = rendered / relative
        if not target.exists() or not filecmp.cmp(source, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            changed.append(relative)
    for relative in sorted(files_of(reference) - files_of(rendered)):
        if not _matches(relative, spec.added):
            (reference / relative).unlink()
            changed.append(f"removed {relative}")
    return changed


__all__ = [
    "REFERENCES",
    "SAM2",
    "VENDORED",
    "XMEM",
    "Reference",
    "differences",
    "reference_answers",
    "render",
    "rendered_reference",
    "sync",
]
