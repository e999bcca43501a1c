"""Finish the generated app: pick the starter model and licence, drop unchosen options,
copy in the runtime and record it and the answers (with the template's commit), print next
steps.

Runs inside the generated directory. No network access. The answers arrive through
``tojson`` like in the pre-gen hook.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ANSWERS: dict[str, Any] = json.loads({{ cookiecutter | jsonify | tojson }})
# The checkout this app is rendered from (local_extensions.py; it knows, the hook does not).
TEMPLATE_DIR: str = {{ template_dir | tojson }}
TEMPLATE_COMMIT: str | None = {{ template_commit | tojson }}

PACKAGE_DIR = Path("src") / ANSWERS["__package_name"]
RUNTIME_DIR = Path("src") / "sly_vos"
VERSION_RE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)

# Starter model choice -> file that becomes ``model.py``.
STARTER_FILES: dict[str, str] = {
    "optical-flow": "model_optical_flow.py",
    "stub": "model_stub.py",
}

# Licence choice -> file of ``licenses/`` that becomes ``LICENSE`` (None: no licence file).
LICENSE_FILES: dict[str, str | None] = {
    "MIT": "MIT.txt",
    "Apache-2.0": "Apache-2.0.txt",
    "BSD-3-Clause": "BSD-3-Clause.txt",
    "GPL-3.0-only": "GPL-3.0-only.txt",
    "Proprietary": None,
}

# (condition, paths to remove): files that belong to options not chosen.
REMOVALS: list[tuple[bool, list[str]]] = [
    (not ANSWERS["include_github_workflows"], [".github"]),
]

# Keys written to .cruft.json: the answers a re-render needs (visible keys only; the
# derived ``__`` keys are derived again, paths of this machine are left out).
def recorded_answers(answers: dict[str, Any]) -> dict[str, Any]:
    """The answers to keep in the app, in cookiecutter.json order."""
    return {key: value for key, value in answers.items() if not key.startswith("_")}


def select_starter(starter: str) -> None:
    """Make the chosen starter ``model.py`` and delete the others."""
    for choice, name in STARTER_FILES.items():
        path = PACKAGE_DIR / name
        if choice == starter:
            path.replace(PACKAGE_DIR / "model.py")
        elif path.exists():
            path.unlink()


def select_license(choice: str) -> None:
    """Move the chosen licence text to ``LICENSE``; drop the folder of texts."""
    name = LICENSE_FILES[choice]
    if name is not None:
        (Path("licenses") / name).replace("LICENSE")
    shutil.rmtree("licenses")


def remove_unchosen(removals: list[tuple[bool, list[str]]]) -> None:
    for condition, paths in removals:
        if not condition:
            continue
        for name in paths:
            path = Path(name)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def template_source(answers: dict[str, Any]) -> tuple[str, str | None]:
    """Where the template came from and at which commit.

    A template given as a URL (``gh:``, ``https://``, ``git@``) is recorded as given; a local
    checkout by its absolute path (git clones it for ``cruft update`` just the same). The
    commit is cruft's (``_commit``) or the checkout's HEAD.
    """
    given = str(answers.get("_template") or "")
    remote = re.match(r"^[a-z][a-z0-9+.-]*://|^git@|^gh:|^gl:|^bb:", given)
    template = given if remote else TEMPLATE_DIR
    return template, answers.get("_commit") or TEMPLATE_COMMIT


def copy_runtime(template_dir: Path) -> None:
    """Copy the template repository's one runtime, ``runtime/sly_vos``, into ``src/sly_vos``.

    A real copy (no link): the app's folder is its Docker build context and may be copied or
    pushed anywhere on its own.
    """
    source = template_dir / "runtime" / "sly_vos"
    if not (source / "__init__.py").is_file():
        raise SystemExit(
            f"ERROR: the template's runtime is missing: {source} (render from a full checkout "
            "of the template repository)"
        )
    shutil.copytree(source, RUNTIME_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def record_runtime(template: str, commit: str | None) -> None:
    """Drop caches from the vendored runtime and write ``src/sly_vos/VENDORED.json``: its
    version, its source, and the sha256 of every file (its tests say when one was edited)."""
    files = sorted(p for p in RUNTIME_DIR.rglob("*") if p.is_file() and p.name != "VENDORED.json")
    init = (RUNTIME_DIR / "__init__.py").read_text(encoding="utf-8")
    found = VERSION_RE.search(init)
    record = {
        "package": "sly_vos",
        "version": found.group(1) if found else None,
        "template": template,
        "commit": commit,
        "note": "verbatim copy of the template's runtime: do not edit, update with cruft update",
        "files": {
            p.relative_to(RUNTIME_DIR).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files
        },
    }
    (RUNTIME_DIR / "VENDORED.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")


def record_answers(answers: dict[str, Any], template: str, commit: str | None) -> None:
    """Write ``.cruft.json`` so the app can be re-rendered or updated (``cruft update``)."""
    record = {
        "template": template,
        "commit": commit,
        "checkout": None,
        "context": {"cookiecutter": recorded_answers(answers)},
        "directory": None,
    }
    Path(".cruft.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def next_steps(answers: dict[str, Any]) -> str:
    slug = answers["app_slug"]
    return "\n".join(
        [
            f"Generated {slug}/. Next steps:",
            f"  cd {slug}",
            "  python3 -m venv .venv && . .venv/bin/activate",
            f"  pip install torch=={answers['torch_version']} && pip install -r requirements-dev.txt",
            "  python -m pytest                 # the app's own tests",
            "  cp debug.env.example debug.env   # then: see README.md, 'Run locally'",
        ]
    )


def main() -> int:
    select_starter(ANSWERS["starter_model"])
    select_license(ANSWERS["license"])
    remove_unchosen(REMOVALS)
    copy_runtime(Path(TEMPLATE_DIR))
    template, commit = template_source(ANSWERS)
    record_runtime(template, commit)
    record_answers(ANSWERS, template, commit)
    print(next_steps(ANSWERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
