"""Where the shared XMem facts and golden fixture live, and what to do when they are absent.

They sit in ``shared/xmem`` beside the repository. Outside CI a checkout without them skips
the tests that need them; in CI (``CI`` set) that is a failure, so parity is never skipped
silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "xmem"
GOLDEN = SHARED / "golden"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise skip (or fail in CI) naming where it was looked for."""
    if not path.exists():
        message = (f"shared XMem fixture not found at {path} (expected a shared/ checkout "
                   "beside the repository)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
