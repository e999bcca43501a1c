"""Fixtures of the runtime's own tests: a tiny fake app package and the bundled sample."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sly_vos.dev.synthetic import write_sample

FAKE_SETTINGS = """
from sly_vos import AppSettings

SETTINGS = AppSettings(
    model_name="Fake", app_slug="serve-fake", package="fakeapp", app_version="0.0.1",
    weights_url="https://example.com/fake.pth", weights_sha256=None,
    weights_filename="fake.pth", env_prefix="FAKEAPP",
)
"""

FAKE_MODEL = '''
"""A model that copies the first mask to every frame (fast, deterministic, tracks nothing)."""

WEIGHTS_REQUIRED = False


class Tracker:
    def __init__(self, weights_path, device):
        self.device = device

    def track(self, frames, label_mask):
        for _ in frames:
            yield label_mask.copy()


def make_test_weights(directory):
    return None
'''


@pytest.fixture(scope="session")
def fake_app_src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``src/`` folder holding the package ``fakeapp`` (importable while the test runs)."""
    src = tmp_path_factory.mktemp("fake_app") / "src"
    package = src / "fakeapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(textwrap.dedent(FAKE_SETTINGS))
    (package / "model.py").write_text(textwrap.dedent(FAKE_MODEL))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(src)
        yield src
    for name in [m for m in sys.modules if m == "fakeapp" or m.startswith("fakeapp.")]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The apps' bundled sample, written afresh (the same bytes as ``<app>/sample``)."""
    return write_sample(tmp_path_factory.mktemp("sample"))
