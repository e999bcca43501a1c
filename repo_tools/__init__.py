"""Tooling of this template repository, shared by its scripts, benchmarks and tests.

Not part of any generated app (an app carries only ``src/sly_vos``, the runtime). What the
repository's own tools have in common lives here, once:

- ``repo_tools`` (this file): the repository's paths; putting ``runtime/``,
  ``reference_xmem/src`` or an app's ``src/`` on ``sys.path``; importing a file by path.
- ``repo_tools.baking``: the template's answers, ``bake()`` (cookiecutter's API, into a
  folder, with answers) and ``App`` (a servable app folder: a bake or a reference copy).
- ``repo_tools.serving``: the environment of an app served on loopback (``serve_env``),
  ``served()`` (a real uvicorn server for a ``with`` block), a copy of ``reference_xmem``
  and its recipe weights.
- ``repo_tools.machine``: machine facts (CPU, cores, RAM, load, versions, RSS).
- ``repo_tools.bench``: the benchmark scripts' ``main`` (arguments, results JSON), timing,
  markdown and console tables.

Every module keeps heavy imports (torch, cv2, supervisely, cookiecutter) inside functions,
so importing any of them is cheap. The package is installed (editable) by ``make setup``, so
scripts, benchmarks and tests import it as is; ``on_sys_path`` is the one place that changes
``sys.path``, for the folders that are not installed (the runtime, an app's ``src/``, a
checkout of upstream XMem).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_APP_DIR = REPO_ROOT / "{{cookiecutter.app_slug}}"
RUNTIME_DIR = REPO_ROOT / "runtime"  # holds the package sly_vos
REFERENCE_DIR = REPO_ROOT / "reference_xmem"
XMEM_SRC = REFERENCE_DIR / "src"  # packages xmem and serve_xmem (and a link to sly_vos)
BENCH_DIR = REPO_ROOT / "benchmarks"
CACHE_DIR = BENCH_DIR / ".cache"  # git-ignored: XMem recipe weights


def on_sys_path(*folders: Path, first: bool = True) -> None:
    """Make ``folders`` importable (each once); ``first`` puts them ahead of the rest, in
    the order given."""
    for folder in reversed(folders) if first else folders:
        text = str(folder)
        if text in sys.path:
            if not first:
                continue
            sys.path.remove(text)
        if first:
            sys.path.insert(0, text)
        else:
            sys.path.append(text)


def runtime_on_path() -> None:
    """Make the one runtime package, ``runtime/sly_vos``, importable as ``sly_vos``.

    Appended, not prepended: where an app's ``src`` is on the path its verbatim copy of
    the runtime wins, so a script runs the code its app serves."""
    on_sys_path(RUNTIME_DIR, first=False)


def reference_on_path() -> None:
    """Make the reference app's ``xmem`` and ``serve_xmem`` packages importable."""
    on_sys_path(XMEM_SRC)


def import_by_path(name: str, path: Path) -> ModuleType:
    """Import one file as module ``name`` (registered first, as dataclasses require)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def repo_relative(text: str | Path) -> str:
    """A path inside the repository as the relative path a reader can type; else as is."""
    path = Path(text)
    if not path.is_absolute():
        return str(text)
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(text)


__all__ = [
    "BENCH_DIR",
    "CACHE_DIR",
    "REFERENCE_DIR",
    "REPO_ROOT",
    "RUNTIME_DIR",
    "TEMPLATE_APP_DIR",
    "XMEM_SRC",
    "import_by_path",
    "on_sys_path",
    "reference_on_path",
    "repo_relative",
    "runtime_on_path",
]
