"""Fixtures for template tests: a ``bake`` fixture returning a small baked-project helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from repo_tools import baking
from tests.baking import BakedProject, check_known_keys


@pytest.fixture
def bake(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., BakedProject]:
    """Bake the template with answers, the repository's one way (``repo_tools.baking.bake``),
    each bake in a fresh folder. Unknown answer keys are refused, not ignored; a bake that
    fails is returned with its exception (``project.ok`` is false), for the test to report."""

    def _bake(**answers: Any) -> BakedProject:
        check_known_keys(answers)
        output_dir = tmp_path_factory.mktemp("bake")
        try:
            app = baking.bake(output_dir, answers)
        except SystemExit as exc:  # a hook's exit
            code = exc.code if isinstance(exc.code, int) else 1
            return BakedProject(code, exc if code else None, None, None)
        except Exception as exc:
            return BakedProject(-1, exc, None, None)
        return BakedProject(0, None, app.root, dict(app.context or {}))

    return _bake
