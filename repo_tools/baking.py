"""Baking the template (cookiecutter's API) and the app folders it makes.

``bake(folder, answers)`` renders the template into ``folder`` with the given answers (the
defaults of ``cookiecutter.json`` otherwise; an unknown answer is refused, a typo would be
ignored by cookiecutter) and returns an ``App``. It is the repository's one way to render
the template: the tests' ``bake`` fixture, the reference apps' rendering
(``repo_tools.reference``), the scripts and the benchmarks all call it. ``App`` is any
servable app folder, a bake or a copy of ``reference_xmem``: its ``src/``, its package, its
settings.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from pathlib import Path
from types import ModuleType
from typing import Any

from . import REPO_ROOT, on_sys_path

TEMPLATE_ANSWERS: dict[str, Any] = json.loads(
    (REPO_ROOT / "cookiecutter.json").read_text(encoding="utf-8")
)
TEMPLATE_KEYS = frozenset(TEMPLATE_ANSWERS)
RECORD = ".cruft.json"  # the answers every generated app keeps


class UnknownAnswerError(KeyError):
    """An answer the template does not have (cookiecutter would ignore a typo)."""


def check_answers(answers: Mapping[str, Any]) -> None:
    """Refuse answers that are not keys of ``cookiecutter.json``."""
    unknown = sorted(set(answers) - TEMPLATE_KEYS)
    if unknown:
        raise UnknownAnswerError(f"not answers of cookiecutter.json: {', '.join(unknown)}")


def package_name(app_slug: str) -> str:
    """The Python package of an app slug (``__package_name`` of cookiecutter.json)."""
    return app_slug.replace("-", "_")


@dataclass(frozen=True)
class App:
    """A servable app folder: ``<root>/src/<package>/`` and ``<root>/src/sly_vos/``."""

    root: Path
    package: str
    # What cookiecutter rendered with (private keys such as ``__package_name`` included);
    # known for a bake only.
    context: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def at(cls, root: Path, package: str | None = None) -> App:
        """The app in ``root``; its package from its recorded answers (or folder name)."""
        root = Path(root).resolve()
        if package is None:
            slug = root.name
            record = root / RECORD
            if record.is_file():
                answers = json.loads(record.read_text(encoding="utf-8"))
                slug = answers["context"]["cookiecutter"].get("app_slug", slug)
            package = package_name(slug)
        if not (root / "src" / package).is_dir():
            raise FileNotFoundError(f"{root}: no src/{package}/ (not an app folder?)")
        return cls(root, package)

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def sample(self) -> Path:
        """The bundled DAVIS-style sample (may be absent in a trimmed copy)."""
        return self.root / "sample"

    def on_path(self) -> None:
        """Put ``src/`` first on ``sys.path``: the app's package and its copy of the
        runtime (``sly_vos``) become importable, as they are when the app runs."""
        on_sys_path(self.src)

    def module(self, name: str = "") -> ModuleType:
        """``<package>`` or ``<package>.<name>`` (``src/`` is put on the path first)."""
        self.on_path()
        return importlib.import_module(f"{self.package}.{name}" if name else self.package)

    def settings(self) -> Any:
        """The app's ``sly_vos.AppSettings`` (``<package>.settings.SETTINGS``)."""
        return self.module("settings").SETTINGS


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 (the post-gen hook prints its next steps from a
    subprocess, which ``contextlib.redirect_stdout`` would not catch)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def isolated_config(folder: Path) -> Path:
    """A cookiecutter config in ``folder``: a bake reads no user ``~/.cookiecutterrc`` (its
    ``default_context`` would change the answers) and writes its replay there, not in
    ``~/.cookiecutter_replay``."""
    config = folder / "cookiecutter.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(folder / 'templates'))}\n"
        f"replay_dir: {json.dumps(str(folder / 'replay'))}\n"
        "default_context: {}\n",
        encoding="utf-8",
    )
    return config


def bake(
    output_dir: Path,
    answers: Mapping[str, Any] | None = None,
    *,
    template: Path = REPO_ROOT,
    replace: bool = False,
    quiet: bool = True,
) -> App:
    """Render the template into ``output_dir`` (created if needed) with cookiecutter's API.

    ``answers`` override the defaults of ``cookiecutter.json``; unknown keys raise
    ``UnknownAnswerError``. ``replace``: an app folder already there is replaced (the new
    one is rendered beside it first, so a failed bake leaves the old one); otherwise
    cookiecutter refuses to overwrite it. ``quiet`` hides the post-gen hook's next steps.
    """
    from cookiecutter.main import cookiecutter

    answers = dict(answers or {})
    check_answers(answers)
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    def render(into: Path) -> tuple[Path, dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="cookiecutter-config-") as config_dir:
            config = isolated_config(Path(config_dir))
            with quiet_stdout() if quiet else contextlib.nullcontext():
                path = cookiecutter(
                    str(template),
                    no_input=True,
                    extra_context=answers or None,
                    output_dir=str(into),
                    config_file=str(config),
                )
            (replay,) = (Path(config_dir) / "replay").glob("*.json")
            context = json.loads(replay.read_text(encoding="utf-8"))["cookiecutter"]
        return Path(path), context

    if not replace:
        path, context = render(output_dir)
        return with_fields(App.at(path), context=context)
    with tempfile.TemporaryDirectory(prefix=".bake-", dir=output_dir) as tmp:
        fresh, context = render(Path(tmp))
        target = output_dir / fresh.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        fresh.rename(target)
    return with_fields(App.at(target), context=context)


__all__ = [
    "RECORD",
    "TEMPLATE_ANSWERS",
    "TEMPLATE_KEYS",
    "App",
    "UnknownAnswerError",
    "bake",
    "check_answers",
    "isolated_config",
    "package_name",
    "quiet_stdout",
]
