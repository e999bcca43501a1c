"""Fixtures for template tests: a ``bake`` fixture returning a small baked-project helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.baking import REPO_ROOT, BakedProject, check_known_keys


@pytest.fixture
def bake(cookies) -> Callable[..., BakedProject]:
    """Bake the template with answers; unknown answer keys are refused, not ignored."""

    def _bake(**extra_context: Any) -> BakedProject:
        check_known_keys(extra_context)
        result = cookies.bake(extra_context=extra_context, template=str(REPO_ROOT))
        return BakedProject(
            exit_code=result.exit_code,
            exception=result.exception,
            path=result.project_path,
            context=dict(result.context) if result.context else None,
        )

    return _bake
