"""The baked-project helper, the named option combinations and the answer-key guard."""

from __future__ import annotations

import ast
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_KEYS = frozenset(json.loads((REPO_ROOT / "cookiecutter.json").read_text("utf-8")))

# Named option combinations: the id says what is special about each.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "stub-starter": {"starter_model": "stub"},
    "no-gpu": {"gpu": "no", "license": "Apache-2.0"},
    "gpu-required-cuda126": {"gpu": "required", "cuda_version": "12.6", "license": "GPL-3.0-only"},
    "no-workflows-proprietary": {"include_github_workflows": False, "license": "Proprietary"},
    "hostile-free-text": {
        "model_name": "Q\"uo'te \\ Mödel",
        "app_name": "App \"with\" 'quotes' \\ and ünïcödé 😀 </script>",
        "description": "Line one\nLine \"two\" \\ with 'quotes', $(id), `id`; ünï 😀",
        "author": 'O\'Brien "Ltd" \\ Straße',
        "weights_sha256": "a" * 64,
        "license": "BSD-3-Clause",
    },
}


class UnknownAnswerError(KeyError):
    """A test passed an answer the template does not have (a typo would be ignored)."""


def check_known_keys(extra_context: dict[str, Any]) -> None:
    unknown = sorted(set(extra_context) - TEMPLATE_KEYS)
    if unknown:
        raise UnknownAnswerError(f"not answers of cookiecutter.json: {', '.join(unknown)}")


@dataclass
class BakedProject:
    """What a bake produced, with helpers for the checks the tests make."""

    exit_code: int
    exception: BaseException | None
    path: Path | None
    context: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.exception is None and self.path is not None

    @property
    def package(self) -> Path:
        assert self.path is not None
        return self.path / "src" / self.context["__package_name"]

    def files(self) -> list[Path]:
        assert self.path is not None
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def read(self, relative: str) -> str:
        assert self.path is not None
        return (self.path / relative).read_text(encoding="utf-8")

    def json(self, relative: str) -> Any:
        return json.loads(self.read(relative))


def parse_structured_files(root: Path) -> None:
    """Parse every JSON, YAML, TOML and Python file below ``root`` (raises on the first bad one)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".json":
            json.loads(path.read_text("utf-8"))
        elif path.suffix in (".yml", ".yaml"):
            yaml.safe_load(path.read_text("utf-8"))
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text("utf-8"))
        elif path.suffix == ".py":
            ast.parse(path.read_text("utf-8"), filename=str(path))
