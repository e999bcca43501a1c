"""The baked-project helper, the named option combinations and the answer-key guard.

The answers, their guard and the bake itself are the repository's (``repo_tools.baking``,
which the ``bake`` fixture, the scripts and the benchmarks bake with); this module keeps the
names the tests import.
"""

from __future__ import annotations

import ast
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from repo_tools import REPO_ROOT
from repo_tools.baking import TEMPLATE_KEYS, UnknownAnswerError
from repo_tools.baking import check_answers as check_known_keys

__all__ = [
    "COMBINATIONS",
    "REPO_ROOT",
    "TEMPLATE_KEYS",
    "BakedProject",
    "UnknownAnswerError",
    "check_known_keys",
    "parse_structured_files",
]

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
        "weights_url": "https://files.example.com/weights/my-model_v2.pth",
        "weights_sha256": "a" * 64,
        "license": "BSD-3-Clause",
    },
}


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
