"""The generated apps' Docker images build and serve for real (issue 11).

Builds the default bake's, ``reference_xmem``'s and ``reference_sam2``'s own
``docker/Dockerfile`` the way their READMEs say, ``docker build -f docker/Dockerfile .`` inside
the app's folder (the bake made a git repository, the reference apps in this checkout, never a
prepared copy; only build args change: a local Debian base, a loopback torch index, loopback
weights; for SAM 2.1 a loopback Hub stand-in as ``HF_ENDPOINT`` serving random weights in
transformers' layout), runs each image with
the entrypoint of its ``config.json`` and sends a ``/track-api-files`` request. Two negative
builds prove the checks bite: the default image with libmagic taken out never becomes ready,
and a wrong weights checksum fails the build (only its weights layer is rebuilt). Each served
image also answers the labeling tool's ``/track_async`` against a platform stand-in on the
host's loopback.

Without an engine the module skips with the reason; under ``CI=true`` it fails instead.
``SLY_VOS_TEMPLATE_ROOT`` / ``SLY_VOS_REFERENCE_DIR`` point the tests at another checkout.
Each image is built once per module; the engine's layer cache and the local base image live in
``SLY_VOS_DOCKER_CACHE`` (default ``~/.cache/sly-vos-docker``) between runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest
import requests

from repo_tools import runtime_on_path
from repo_tools.baking import bake
from tests import container
from tests.container import AppContainer, ContainerNotReady, ContainerUnavailable

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

TEMPLATE_ROOT = Path(os.environ.get("SLY_VOS_TEMPLATE_ROOT") or container.REPO_ROOT)
REFERENCE_DIR = Path(os.environ.get("SLY_VOS_REFERENCE_DIR") or TEMPLATE_ROOT / "reference_xmem")
DEFAULT_TAG = "sly-vos-test/default-bake:latest"
NO_LIBMAGIC_TAG = "sly-vos-test/no-libmagic:latest"
REFERENCE_TAG = "sly-vos-test/reference-xmem:latest"
SAM2_DIR = Path(os.environ.get("SLY_VOS_SAM2_DIR") or TEMPLATE_ROOT / "reference_sam2")
SAM2_TAG = "sly-vos-test/reference-sam2:latest"
SAM2_REPO = "facebook/sam2.1-hiera-tiny"  # the default checkpoint, served by the stand-in
BAD_CHECKSUM_TAG = "sly-vos-test/reference-xmem-bad-checksum:latest"
WRONG_SHA256 = "0" * 64
CLIP_FRAMES = 10
CLIP_IDS = (3, 7)
MIN_MEAN_J = 0.6
TRACK_TIMEOUT_S = 600.0


def unavailable(what: str, reason: str) -> NoReturn:
    """Skip with one line, or fail under ``CI=true`` (CI must not pass by skipping)."""
    if container.in_ci():
        pytest.fail(f"{what} unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


def importing_from(src: Path) -> dict[str, str]:
    """This environment with an app's ``src/`` as ``PYTHONPATH``, for a helper subprocess
    that imports the app's package (and its copy of the runtime)."""
    return {**os.environ, "PYTHONPATH": str(src)}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev() -> SimpleNamespace:
    """The repository's own client and synthetic clips (``runtime/sly_vos/dev``)."""
    runtime_on_path()
    from sly_vos.dev import client, synthetic

    return SimpleNamespace(client=client, synthetic=synthetic)


@pytest.fixture(scope="module", autouse=True)
def engine() -> Iterator[container.Engine]:
    """A docker engine for the module (first, so a skip costs nothing); a dockerd started here
    is stopped at the end."""
    try:
        started = container.start_engine()
    except ContainerUnavailable as exc:
        unavailable("container engine", str(exc))
    values: dict[str, Any] = {"last_run": "started" if started.started_here else "running"}
    if started.installed:  # kept from the last run that installed packages
        values.update(installed=started.installed, install_s=round(started.install_s, 2))
    if started.started_here:
        values["start_s"] = round(started.start_s, 2)
    container.record("setup", "engine", values)
    try:
        yield started
    finally:
        container.remove_started_containers()
        started.stop()


@pytest.fixture(scope="module")
def base_image(engine: container.Engine) -> str:
    """The cached local Python base image (made only when its tag is missing)."""
    base = container.ensure_base_image()
    values: dict[str, Any] = {"tag": base.tag, "last_run": "created" if base.created else "cached"}
    if base.created:
        values.update(
            debootstrap_s=round(base.debootstrap_s, 2),
            import_s=round(base.import_s, 2),
            python_layer_s=round(base.python_s, 2),
        )
    values["size_bytes"] = base.size_bytes
    container.record("setup", "base_image", values)
    return base.tag


@pytest.fixture(scope="module")
def torch_index_url(engine: container.Engine, tmp_path_factory) -> Iterator[str]:
    """``TORCH_INDEX_URL`` of a loopback PEP 503 index with the CPU torch wheel on disk."""
    try:
        wheel = container.find_torch_wheel()
    except ContainerUnavailable as exc:
        unavailable("CPU torch wheel", str(exc))
    with container.torch_index(tmp_path_factory.mktemp("index"), wheel) as url:
        yield url


def build_and_record(
    name: str, context: Path, tag: str, build_args: dict[str, str], check: bool = True
) -> container.BuildResult:
    """Build, and merge its numbers into the results file (a cold build is kept apart)."""
    build = container.build_image(context, tag, build_args, check=False)
    numbers = container.build_record(build)
    values: dict[str, Any] = {"last_build": numbers}
    if build.cold:
        values["cold_build"] = numbers
    container.record("images", name, values)
    if check and build.returncode != 0:
        raise container.BuildFailed(tag, build.returncode, build.output)
    return build


def git_checkout(folder: Path) -> Path:
    """Make ``folder`` a git repository of its files, as a user pushes a new app."""
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bake"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *command],
            cwd=folder,
            check=True,
            capture_output=True,
        )
    return folder


def readme_builds_with_the_dockerfile(app_dir: Path) -> None:
    """The README's build command is the one these tests run, inside the app's folder."""
    readme = (app_dir / "README.md").read_text("utf-8")
    assert "docker build -f docker/Dockerfile" in readme, "the README's build command changed"


@pytest.fixture(scope="module")
def default_app(tmp_path_factory) -> Path:
    """The default bake (the defaults, as ``cookiecutter --no-input`` takes them), a git
    repository; built in place."""
    project = bake(tmp_path_factory.mktemp("bake"), template=TEMPLATE_ROOT).root
    readme_builds_with_the_dockerfile(project)
    return git_checkout(project)


@pytest.fixture(scope="module")
def default_image(default_app: Path, base_image: str, torch_index_url: str) -> str:
    build_and_record(
        "default-bake",
        default_app,
        DEFAULT_TAG,
        {"BASE_IMAGE": base_image, "TORCH_INDEX_URL": torch_index_url},
    )
    return DEFAULT_TAG


@pytest.fixture(scope="module")
def reference_app() -> Path:
    """``reference_xmem`` itself, in this checkout (CI's is a fresh clone), built in place."""
    dockerfile = (REFERENCE_DIR / "docker" / "Dockerfile").read_text("utf-8")
    needed = ("BASE_IMAGE", "WEIGHTS_URL", "WEIGHTS_SHA256")
    missing = [arg for arg in needed if f"ARG {arg}" not in dockerfile]
    if missing:
        pytest.fail(
            f"{REFERENCE_DIR}/docker/Dockerfile has no ARG {', '.join(missing)}: "
            "it is older than the template (make render-reference)",
            pytrace=False,
        )
    readme_builds_with_the_dockerfile(REFERENCE_DIR)
    return REFERENCE_DIR


@pytest.fixture(scope="module")
def recipe_weights(engine: container.Engine) -> Path:
    """Recipe weights (``xmem.recipe``), cached per recipe source so their sha256 is stable."""
    recipe = REFERENCE_DIR / "src" / "xmem" / "recipe.py"
    key = hashlib.sha256(recipe.read_bytes()).hexdigest()[:16]
    path = container.cache_dir() / "recipe-weights" / key / "XMem.pth"
    if not path.is_file():
        partial = path.with_name("partial") / "XMem.pth"
        code = "import sys; from xmem.recipe import write_recipe_weights as w; w(sys.argv[1])"
        subprocess.run(
            [sys.executable, "-c", code, str(partial)],
            env=importing_from(REFERENCE_DIR / "src"),
            check=True,
            timeout=600,
        )
        partial.replace(path)
        partial.parent.rmdir()
    return path


@pytest.fixture(scope="module")
def weights_url(recipe_weights: Path) -> Iterator[str]:
    with container.serve_files(recipe_weights.parent, "recipe-weights") as base_url:
        yield f"{base_url}/{recipe_weights.name}"


@pytest.fixture(scope="module")
def recipe_sha256(recipe_weights: Path) -> str:
    return container.sha256_of(recipe_weights)


def reference_build_args(
    base_image: str, torch_index_url: str, weights_url: str, sha256: str
) -> dict[str, str]:
    return {
        "BASE_IMAGE": base_image,
        "TORCH_INDEX_URL": torch_index_url,
        "WEIGHTS_URL": weights_url,
        "WEIGHTS_SHA256": sha256,
    }


@pytest.fixture(scope="module")
def reference_image(
    reference_app: Path, base_image: str, torch_index_url: str, weights_url: str, recipe_sha256: str
) -> str:
    args = reference_build_args(base_image, torch_index_url, weights_url, recipe_sha256)
    build_and_record("reference-xmem", reference_app, REFERENCE_TAG, args)
    return REFERENCE_TAG


@pytest.fixture(scope="module")
def sam2_app() -> Path:
    """``reference_sam2`` itself, in this checkout, built in place."""
    readme_builds_with_the_dockerfile(SAM2_DIR)
    return SAM2_DIR


@pytest.fixture(scope="module")
def sam2_weights(engine: container.Engine) -> Path:
    """SAM 2's random test weights (``make_test_weights``: hiera-tiny at S=128, transformers'
    layout), cached per model file."""
    model = SAM2_DIR / "src" / "serve_sam2" / "model.py"
    key = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    parent = container.cache_dir() / "sam2-random" / key
    code = (
        "import sys, pathlib; from serve_sam2.model import make_test_weights; "
        "print(make_test_weights(pathlib.Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(parent)], env=importing_from(SAM2_DIR / "src"),
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub_endpoint(sam2_weights: Path) -> Iterator[str]:
    """A loopback Hub stand-in (``sly_vos.testing.hub``) serving the random weights."""
    runtime_on_path()
    from sly_vos.testing.hub import HubStandIn

    files = {name: sam2_weights / name for name in ("config.json", "model.safetensors")}
    with HubStandIn(files) as hub:  # type: ignore[arg-type]
        yield hub.url


@pytest.fixture(scope="module")
def sam2_image(sam2_app: Path, base_image: str, torch_index_url: str, hub_endpoint: str) -> str:
    args = {"BASE_IMAGE": base_image, "TORCH_INDEX_URL": torch_index_url}
    args["HF_ENDPOINT"] = hub_endpoint
    build_and_record("reference-sam2", sam2_app, SAM2_TAG, args)
    return SAM2_TAG


# --- helpers --------------------------------------------------------------------------------


def serve(image: str, app_dir: Path, data_dir: Path, name: str, record_as: str) -> AppContainer:
    """Start ``image`` and wait for ``/is_ready``; records the time it took."""
    app = AppContainer(image, app_dir / "config.json", data_dir, name)
    app.start()
    try:
        ready_s = app.wait_ready()
    except BaseException:
        app.remove()
        raise
    container.record("images", record_as, {"ready_s": round(ready_s, 2)})
    return app


def track_clip(app: AppContainer, dev: SimpleNamespace, clip: Any) -> list[list[dict[str, Any]]]:
    """POST the clip to ``/track-api-files`` (first frame annotated, one bitmap per object)."""
    files, settings = dev.client.clip_request(clip.frames, clip.masks[0], clip.ids)
    response = dev.client.post_track(app.base_url, files, settings, timeout=TRACK_TIMEOUT_S)
    assert response.status_code == 200, (
        f"{response.status_code}: {response.text[:2000]}\n" + (app.logs()[-4000:])
    )
    return response.json()


def make_clip(dev: SimpleNamespace) -> Any:
    return dev.synthetic.make_clip(num_frames=CLIP_FRAMES, ids=CLIP_IDS, seed=0, name="container")


def post_json(url: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(url, json=body, timeout=TRACK_TIMEOUT_S)


def track_async_against_platform_stand_in(
    app: AppContainer, clip: Any, frames: int = CLIP_FRAMES - 1
) -> list[dict[str, Any]]:
    """The labeling tool's newer request, end to end: the clip as a video on a platform
    stand-in (127.0.0.1: the container shares the host's network), one figure per object,
    ``/track_async``, then ``/pop_tracking_results`` until the job is finished. Returns
    the pulled figures as ``{frame, objectId, geometryType, geometry}``."""
    runtime_on_path()
    from supervisely.api.video.video_figure_api import FigureInfo

    from sly_vos.dev.client import bitmap_geometry
    from sly_vos.testing.platform import PlatformStandIn

    with PlatformStandIn() as platform:
        video = platform.add_video(clip.frames, clip.masks, name="container")
        figures = [
            platform.add_figure(video, 100 + obj, 0, "bitmap",
                                bitmap_geometry(clip.masks[0] == obj)["data"])
            for obj in clip.ids
        ]  # fmt: skip
        context = {
            "videoId": video, "frameIndex": 0, "frames": frames, "trackId": "container",
            "figures": [platform.figure_json(f) for f in figures],
        }  # fmt: skip
        body = {"context": context, "server_address": platform.url, "api_token": platform.token}
        started = post_json(f"{app.base_url}/track_async", body)
        assert started.status_code == 200, started.text[:2000] + app.logs()[-4000:]
        uuid = started.json()["inference_request_uuid"]
        pulled: list[dict[str, Any]] = []
        deadline = time.monotonic() + TRACK_TIMEOUT_S
        while time.monotonic() < deadline:
            answer = post_json(
                f"{app.base_url}/pop_tracking_results",
                {"context": {"inference_request_uuid": uuid}},
            ).json()
            for row in answer["pending_results"]:
                info = dict(zip(FigureInfo._fields, row, strict=True))
                pulled.append(
                    {
                        "frame": info["frame_index"],
                        "objectId": info["object_id"],
                        "geometryType": info["geometry_type"],
                        "geometry": info["geometry"],
                    }
                )
            if answer["finished"] and not answer["pending_results"]:
                assert answer["exception"] is None, answer["exception"]
                assert answer["progress"]["current"] == frames, answer["progress"]
                return pulled
            time.sleep(0.2)
    logs = app.logs()[-4000:]
    raise AssertionError(f"/track_async did not finish in {TRACK_TIMEOUT_S} s:\n{logs}")


def pulled_masks(pulled: list[dict[str, Any]], clip: Any, dev: SimpleNamespace) -> list[Any]:
    """Label masks per frame (caller ids) from pulled figures (objectId = 100 + id)."""
    import numpy as np

    height, width = clip.masks[0].shape
    masks = [clip.masks[0]] + [np.zeros((height, width), np.uint8) for _ in clip.masks[1:]]
    for figure in pulled:
        item = {"type": figure["geometryType"], "data": figure["geometry"]}
        masks[figure["frame"]][dev.client.geometry_mask(item, height, width)] = (
            figure["objectId"] - 100
        )
    return masks


# --- tests ----------------------------------------------------------------------------------


def test_default_bake_builds_serves_and_tracks(
    default_image: str, default_app: Path, dev: SimpleNamespace, tmp_path: Path
) -> None:
    """``/track-api-files`` and the labeling tool's ``/track_async`` (against a platform
    stand-in), both tracking the synthetic clip well."""
    clip = make_clip(dev)
    app = serve(default_image, default_app, tmp_path / "data", "sly-vos-default", "default-bake")
    try:
        began = time.monotonic()
        answer = track_clip(app, dev, clip)
        track_s = time.monotonic() - began
        pulled = track_async_against_platform_stand_in(app, clip)
    finally:
        app.remove()
    assert isinstance(answer, list) and len(answer) == CLIP_FRAMES - 1
    labels = dev.client.answer_to_label_masks(answer, clip.masks[0], clip.ids)
    score = dev.synthetic.mean_j(labels, clip.masks, clip.ids)
    async_score = dev.synthetic.mean_j(pulled_masks(pulled, clip, dev), clip.masks, clip.ids)
    container.record(
        "images",
        "default-bake",
        {"mean_j": round(score, 4), "track_async_mean_j": round(async_score, 4),
         "track_s": round(track_s, 2)},
    )  # fmt: skip
    assert score >= MIN_MEAN_J, f"/track-api-files: mean J {score:.3f} < {MIN_MEAN_J}"
    assert async_score >= MIN_MEAN_J, f"/track_async: mean J {async_score:.3f} < {MIN_MEAN_J}"


def test_an_image_without_libmagic_never_becomes_ready(
    default_image: str, default_app: Path, tmp_path: Path
) -> None:
    """The check above bites: the default image with libmagic taken out again (what a
    Dockerfile without ``libmagic1`` gives, since python-magic, imported by supervisely, needs
    it) exits at start and its logs say why. Derived from the built image, so it costs
    seconds, not a second full build."""
    baked = (default_app / "docker" / "Dockerfile").read_text("utf-8")
    assert re.search(r"\blibmagic1\b", baked), "the baked Dockerfile no longer installs libmagic1"
    context = tmp_path / "no-libmagic"
    context.mkdir()
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        f"FROM {default_image}\n"
        "RUN dpkg --purge --force-depends libmagic1 libmagic-mgc \\\n"
        "    && ! ls /usr/lib/*/libmagic.so.1* 2>/dev/null\n",
        "utf-8",
    )
    build = container.build_image(context, NO_LIBMAGIC_TAG, dockerfile="Dockerfile", check=False)
    container.record("images", "no-libmagic", {"last_build": container.build_record(build)})
    assert build.returncode == 0, build.output[-4000:]
    with AppContainer(
        NO_LIBMAGIC_TAG, default_app / "config.json", tmp_path / "data", "no-magic"
    ) as app:
        with pytest.raises(ContainerNotReady) as failure:
            app.wait_ready()
    assert "libmagic" in failure.value.logs, failure.value.logs[-4000:]


def test_reference_image_has_its_checksummed_weights(
    reference_image: str, recipe_sha256: str
) -> None:
    listing = container.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", reference_image,
        "-c", "sha256sum /weights/*",
        timeout=300,
    ).stdout  # fmt: skip
    assert recipe_sha256 in listing, listing


def test_reference_image_serves_well_formed_answers(
    reference_image: str, reference_app: Path, dev: SimpleNamespace, tmp_path: Path
) -> None:
    clip = make_clip(dev)
    app = serve(reference_image, reference_app, tmp_path / "data", "sly-vos-xmem", "reference-xmem")
    try:
        began = time.monotonic()
        answer = track_clip(app, dev, clip)
        track_s = time.monotonic() - began
        pulled = track_async_against_platform_stand_in(app, clip, frames=4)
    finally:
        app.remove()
    container.record("images", "reference-xmem", {"track_s": round(track_s, 2)})
    assert {f["frame"] for f in pulled} <= set(range(1, 5))
    assert {f["objectId"] for f in pulled} <= {100 + obj for obj in CLIP_IDS}
    assert isinstance(answer, list) and len(answer) == CLIP_FRAMES - 1, answer
    for frame in answer:
        assert isinstance(frame, list) and len(frame) <= len(CLIP_IDS), frame
        for geometry in frame:
            assert set(geometry) >= {"type", "data"} and geometry["type"] == "bitmap", geometry
    dev.client.answer_to_label_masks(answer, clip.masks[0], clip.ids)  # decodes


def test_reference_build_with_a_wrong_checksum_fails(
    reference_app: Path, base_image: str, torch_index_url: str, weights_url: str
) -> None:
    args = reference_build_args(base_image, torch_index_url, weights_url, WRONG_SHA256)
    build = build_and_record(
        "reference-xmem-wrong-checksum", reference_app, BAD_CHECKSUM_TAG, args, check=False
    )
    assert build.returncode != 0, "a build with a wrong WEIGHTS_SHA256 succeeded"
    assert "checksum mismatch" in build.output, build.output[-4000:]


def test_sam2_image_has_its_default_checkpoint_from_the_hub(
    sam2_image: str, sam2_weights: Path
) -> None:
    listing = container.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", sam2_image,
        "-c", "sha256sum /weights/hub/models--*/snapshots/*/*",
        timeout=300,
    ).stdout  # fmt: skip
    assert container.sha256_of(sam2_weights / "model.safetensors") in listing, listing
    assert "models--" + SAM2_REPO.replace("/", "--") in listing, listing


def test_sam2_image_serves_well_formed_answers(
    sam2_image: str, sam2_app: Path, dev: SimpleNamespace, tmp_path: Path
) -> None:
    """Random weights track nothing: the answers are checked for form, not quality."""
    clip = make_clip(dev)
    app = serve(sam2_image, sam2_app, tmp_path / "data", "sly-vos-sam2", "reference-sam2")
    try:
        info = post_json(f"{app.base_url}/get_session_info", {}).json()
        began = time.monotonic()
        answer = track_clip(app, dev, clip)
        track_s = time.monotonic() - began
        pulled = track_async_against_platform_stand_in(app, clip, frames=4)
    finally:
        app.remove()
    container.record("images", "reference-sam2", {"track_s": round(track_s, 2)})
    assert info["checkpoint"]["name"] == "tiny", info
    assert {f["frame"] for f in pulled} <= set(range(1, 5))
    assert {f["objectId"] for f in pulled} <= {100 + obj for obj in CLIP_IDS}
    assert isinstance(answer, list) and len(answer) == CLIP_FRAMES - 1, answer
    for frame in answer:
        assert isinstance(frame, list) and len(frame) <= len(CLIP_IDS), frame
        for geometry in frame:
            assert set(geometry) >= {"type", "data"} and geometry["type"] == "bitmap", geometry
    dev.client.answer_to_label_masks(answer, clip.masks[0], clip.ids)  # decodes
