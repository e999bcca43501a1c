"""Read a baked app's ``settings.py`` without importing it (it imports the runtime)."""

from __future__ import annotations

import ast


def settings_literals(source: str) -> dict[str, object]:
    """The keyword literals of the ``SETTINGS = AppSettings(...)`` call in settings.py."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
    raise AssertionError("settings.py has no SETTINGS = AppSettings(...)")
