"""pytest plugin: the runtime's test suites, run against an app's own ``TrackingApp``.

An app turns it on in ``tests/conftest.py``::

    pytest_plugins = ["sly_vos.testing"]

    @pytest.fixture(scope="session")
    def app_class():
        return MyModelTracker

and pytest then also collects the suites of ``sly_vos/testing/suites/`` (contract, server,
labeling-tool protocol against a platform stand-in, reliability, weights, manifest) as if
they were in that ``tests/`` folder, with the app's fixtures.

What the app's model can do is decided at run time, strictly:

* ``@pytest.mark.needs_tracking`` tests need a model that tracks. For a model whose
  ``Tracker.track`` raises ``NotImplementedError`` (the stub starter) they are marked
  ``xfail(raises=NotImplementedError, strict=True)``: they must fail exactly that way, and
  the day the model is filled in they pass, with no marker to remove.
* ``@pytest.mark.quality`` tests hold the model to a tracking-quality bar. A model module
  that declares ``RANDOM_TEST_WEIGHTS = True`` (its test weights are random, like XMem's
  recipe weights) has them skipped with that reason; everything else must pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..appspec import AppSpec
from ..dev import synthetic
from ..tracking import track_stream
from ..transport import HttpPolicy
from .platform import PlatformStandIn
from .server import Server, error_of, free_port, serving_env

SUITES_DIR = Path(__file__).parent / "suites"  # unresolved: a linked runtime keeps app paths
PLUGIN = __name__

MARKERS = (
    "needs_tracking: needs a model that tracks (strict xfail for a NotImplementedError stub)",
    "quality: a tracking-quality bar (skipped for models with RANDOM_TEST_WEIGHTS)",
    "slow: starts a real server or downloads; deselect with -m 'not slow'",
    "reliability: load, faults and hostile input",
    "protocol: the labeling tool's endpoints against the platform stand-in",
    "long: long variants of the reliability tests (skipped unless pytest --long)",
)
LONG_OPTION = "--long"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        LONG_OPTION,
        action="store_true",
        help="also run the long variants of the reliability tests (full HD, 60 and 120 frames)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long variants are skipped, with the way to run them, rather than deselected: the
    summary always shows that they exist."""
    if config.getoption(LONG_OPTION):
        return
    skip = pytest.mark.skip(reason=f"long variant: run with pytest {LONG_OPTION}")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


class RuntimeSuites(pytest.Collector):
    """The suite modules, collected under the app's ``tests/`` so they see its fixtures."""

    def collect(self) -> Iterator[pytest.Module]:
        for path in sorted(SUITES_DIR.glob("test_*.py")):
            if self.ihook.pytest_ignore_collect(collection_path=path, config=self.config):
                continue  # --ignore / --ignore-glob / collect_ignore work as for any test file
            yield pytest.Module.from_parent(self, path=path, name=path.name)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name != "conftest.py":
        return None
    conftest = parent.config.pluginmanager.get_plugin(str(file_path))
    if conftest is None or PLUGIN not in getattr(conftest, "pytest_plugins", ()):
        return None
    return RuntimeSuites.from_parent(parent, name="sly_vos")


# ---------------------------------------------------------------- what the model can do


@dataclass(frozen=True)
class ModelProfile:
    """Found out once per session by running the model on a two-frame clip."""

    stub: bool
    stub_reason: str
    random_weights: bool


@pytest.fixture(scope="session")
def app_spec(app_class: Any) -> AppSpec:
    """The app's settings and model module (from the conftest's ``app_class``)."""
    return AppSpec(app_class.settings, app_class.model)


@pytest.fixture(scope="session")
def app_root(app_spec: AppSpec) -> Path:
    """The app folder (holds ``config.json``, ``src/``, ``docker/``)."""
    model_file = Path(app_spec.model.__file__).resolve()
    return model_file.parents[2]  # <root>/src/<package>/model.py


@pytest.fixture(scope="session")
def test_weights(app_spec: AppSpec, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Weights the model can load offline (``None`` when the model needs none)."""
    path = app_spec.make_test_weights(tmp_path_factory.mktemp("weights"))
    if app_spec.weights_required and path is None:
        pytest.fail("model.WEIGHTS_REQUIRED is True but make_test_weights returned None")
    return path


@pytest.fixture(scope="session")
def tracker(app_spec: AppSpec, test_weights: Path | None) -> Any:
    """One model on the CPU for the session (constructing it must never raise)."""
    return app_spec.make_tracker(test_weights, "cpu")


@pytest.fixture(scope="session")
def model_profile(app_spec: AppSpec, tracker: Any) -> ModelProfile:
    clip = synthetic.make_clip(num_frames=2, height=48, width=64, ids=(1,), seed=1)
    try:
        list(track_stream(tracker, iter(clip.frames), clip.masks[0], 2))
    except NotImplementedError as exc:
        return ModelProfile(True, f"the model is a stub: {exc}", app_spec.random_test_weights)
    return ModelProfile(False, "", app_spec.random_test_weights)


@pytest.fixture(autouse=True)
def _model_expectations(request: pytest.FixtureRequest) -> None:
    node = request.node
    needs = node.get_closest_marker("needs_tracking") is not None
    quality = node.get_closest_marker("quality") is not None
    if not (needs or quality):
        return
    profile: ModelProfile = request.getfixturevalue("model_profile")
    if profile.stub:
        node.add_marker(
            pytest.mark.xfail(raises=NotImplementedError, strict=True, reason=profile.stub_reason)
        )
    elif quality and profile.random_weights:
        pytest.skip("the model's test weights are random (RANDOM_TEST_WEIGHTS): no quality bar")


# ---------------------------------------------------------------- the platform


MODEL_SLACK_S = 60.0  # loading frames into the model, one model step, a log line


def call_bound_s(policy: HttpPolicy) -> float:
    """One platform call, failing in the slowest way the policy allows."""
    return policy.worst_case_s() + 1.0


def job_bound_s(policy: HttpPolicy, frames: int) -> float:
    """A background job whose platform keeps failing: planning, ``frames`` downloads, the
    error report, and the model's share."""
    return (frames + 3) * call_bound_s(policy) + MODEL_SLACK_S


@pytest.fixture(scope="session")
def platform_policy() -> HttpPolicy:
    """The app's platform policy in the tests (short, so that fault tests are quick); the
    server gets it as ``SLY_VOS_PLATFORM_*`` (``HttpPolicy.env``)."""
    return HttpPolicy(
        attempts=3, backoff_s=0.1, backoff_max_s=0.5, connect_timeout_s=1.0, read_timeout_s=2.0
    )


@pytest.fixture(scope="session")
def platform() -> Iterator[PlatformStandIn]:
    """The Supervisely platform's stand-in on 127.0.0.1 (the app's SERVER_ADDRESS)."""
    stand_in = PlatformStandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on (an unreachable platform)."""
    return free_port()


# ---------------------------------------------------------------- a served app


@pytest.fixture(scope="session")
def server_env(
    app_spec: AppSpec,
    test_weights: Path | None,
    platform: PlatformStandIn,
    platform_policy: HttpPolicy,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Environment for ``uvicorn main:model.app`` (``serving_env``): development mode, the
    model on the CPU, test weights, the platform stand-in as SERVER_ADDRESS with short
    platform timeouts."""
    return serving_env(
        app_spec.settings,
        tmp_path_factory.mktemp("served"),
        server_address=platform.url,
        api_token=platform.token,
        weights=test_weights,
        **platform_policy.env(),
    )


@pytest.fixture(scope="session")
def server(
    app_root: Path, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The app served by uvicorn on 127.0.0.1 for the whole session."""
    srv = Server(app_root, server_env, tmp_path_factory.mktemp("server") / "server.log")
    srv.start()
    yield srv
    srv.stop()


def tracked_or_raise(response: Any) -> Any:
    """A tracking answer of the server; a 501 (the model is not implemented) is raised as
    ``NotImplementedError`` here, so the strict xfail of a stub sees exactly that."""
    if response.status_code == 501:
        raise NotImplementedError(response.text[:500])
    return response


def tracked_or_refused(response: Any) -> bool:
    """True when a tracking request was taken (200); a refusal must be a JSON 4xx naming its
    field, never a 5xx (a 501 of a stub is raised as ``NotImplementedError``)."""
    tracked_or_raise(response)
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 200:
        return True
    assert 400 <= response.status_code < 500 and error_of(response)["field"], response.text[:500]
    return False


__all__ = [
    "HttpPolicy",
    "ModelProfile",
    "PlatformStandIn",
    "Server",
    "call_bound_s",
    "job_bound_s",
    "tracked_or_raise",
    "tracked_or_refused",
]
