"""Named checkpoints: an app declares the weights it can run, a deployment picks one.

A model module may declare ``CHECKPOINTS`` (a tuple of ``Checkpoint``), exactly one of them
the default. ``$<PREFIX>_CHECKPOINT`` picks one by name at start (an unknown name stops the
app with one line listing the valid names); the Docker build takes a build argument of the
same name and bakes that checkpoint in. A checkpoint of one file reaches ``Tracker`` as the
file, a checkpoint of several files as the folder holding them.

Where a checkpoint's files come from:

* direct URLs (``urls``, one per file): ``weights.download_weights``, with everything it
  guarantees (sha256 where known, atomic rename, resume, lock, URL rules); one file lands in
  ``<model_dir>/<file>``, several in ``<model_dir>/<name>/``;
* the Hugging Face Hub (``hub_repo`` + ``revision``): ``huggingface_hub.hf_hub_download``
  into its cache under ``<model_dir>/hub`` (its own atomic writes, per-file locks, resume;
  ``HF_TOKEN`` for gated or private repositories, ``HF_ENDPOINT`` for a mirror,
  ``HF_HUB_OFFLINE=1`` to use the cache only). Pin ``revision`` to a commit hash to get
  the same files every time; a sha256 declared for a file is checked after the download.

Errors are ``WeightsError`` (never a ``RuntimeError``, see download.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from .checksums import normalize_sha256
from .download import WeightsError, download_weights, sha256_of
from .transport import DOWNLOAD_POLICY, HttpPolicy

if TYPE_CHECKING:
    from .settings import AppSettings

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # safe in a variable and a path
HUB_CACHE = "hub"  # the Hub cache's folder under the model dir


class CheckpointError(WeightsError):
    """A checkpoint declaration or choice is wrong (names the field and the rule)."""


@dataclass(frozen=True)
class Checkpoint:
    """One named set of weight files, from direct URLs or from a Hub repository."""

    name: str
    files: tuple[str, ...]
    urls: tuple[str, ...] = ()  # one per file; empty for a Hub checkpoint
    hub_repo: str | None = None  # "owner/name" on the Hugging Face Hub
    revision: str | None = None  # Hub branch, tag or (to pin it) commit hash
    sha256: tuple[str | None, ...] = ()  # one per file, None where not published
    default: bool = False
    note: str = ""  # shown in the README table and the error listing

    def __post_init__(self) -> None:
        where = f"checkpoint {self.name!r}"
        if not NAME_RE.match(self.name):
            raise CheckpointError(f"{where}: name must match {NAME_RE.pattern}")
        if not self.files or any(not f or "/" in f or f.startswith(".") for f in self.files):
            raise CheckpointError(f"{where}: files must be plain file names, at least one")
        if bool(self.urls) == bool(self.hub_repo):
            raise CheckpointError(f"{where}: give either urls (one per file) or hub_repo")
        if self.urls and len(self.urls) != len(self.files):
            raise CheckpointError(f"{where}: {len(self.urls)} urls for {len(self.files)} files")
        if self.sha256 and len(self.sha256) != len(self.files):
            raise CheckpointError(f"{where}: {len(self.sha256)} sha256 for {len(self.files)} files")
        try:
            object.__setattr__(self, "sha256", tuple(normalize_sha256(s) for s in self.sha256))
        except ValueError as exc:  # the message names sha256 and the rule
            raise CheckpointError(f"{where}: {exc}") from None

    def expected(self) -> tuple[str | None, ...]:
        return self.sha256 or (None,) * len(self.files)

    @property
    def source(self) -> str:
        if self.hub_repo:
            return f"hf://{self.hub_repo}@{self.revision or 'main'}"
        return self.urls[0] if len(self.urls) == 1 else f"{len(self.urls)} URLs"


def declared(model: ModuleType) -> tuple[Checkpoint, ...]:
    """The model's ``CHECKPOINTS``, checked: unique names, exactly one default."""
    checkpoints = tuple(getattr(model, "CHECKPOINTS", ()) or ())
    if not checkpoints:
        return ()
    name = getattr(model, "__name__", "model")
    if not all(isinstance(c, Checkpoint) for c in checkpoints):
        raise CheckpointError(f"{name}.CHECKPOINTS must hold Checkpoint(...) entries")
    names = [c.name for c in checkpoints]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{name}.CHECKPOINTS: names must be unique, got {names}")
    defaults = [c.name for c in checkpoints if c.default]
    if len(defaults) != 1:
        raise CheckpointError(f"{name}.CHECKPOINTS: exactly one default, got {defaults or 'none'}")
    return checkpoints


def listing(checkpoints: tuple[Checkpoint, ...]) -> str:
    """``tiny (default), small, ...``: the valid names, in declaration order."""
    return ", ".join(c.name + (" (default)" if c.default else "") for c in checkpoints)


def select(
    settings: AppSettings,
    checkpoints: tuple[Checkpoint, ...],
    name: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Checkpoint | None:
    """The checkpoint ``name`` (else ``$<PREFIX>_CHECKPOINT``, else the default); ``None``
    for an app that declares none. Unknown names raise with the valid ones listed."""
    variable = settings.checkpoint_env
    wanted = (name if name is not None else environ.get(variable, "")).strip()
    if not checkpoints:
        if wanted:
            raise CheckpointError(
                f"${variable}={wanted!r}: {settings.model_name} declares no named checkpoints"
            )
        return None
    if not wanted:
        return next(c for c in checkpoints if c.default)
    for checkpoint in checkpoints:
        if checkpoint.name == wanted:
            return checkpoint
    raise CheckpointError(
        f"${variable}={wanted!r} is not a checkpoint of {settings.model_name}; "
        f"valid: {listing(checkpoints)}"
    )


# ---------------------------------------------------------------- where the files are


def url_target(checkpoint: Checkpoint, model_dir: Path) -> Path:
    """One file: ``<model_dir>/<file>``; several: the folder ``<model_dir>/<name>``."""
    if len(checkpoint.files) == 1:
        return model_dir / checkpoint.files[0]
    return model_dir / checkpoint.name


def _url_files(checkpoint: Checkpoint, model_dir: Path) -> list[Path]:
    folder = url_target(checkpoint, model_dir)
    if len(checkpoint.files) == 1:
        return [folder]
    return [folder / name for name in checkpoint.files]


def local(checkpoint: Checkpoint, model_dir: Path) -> Path | None:
    """The checkpoint already in ``model_dir`` (each file present and matching its sha256),
    without any network access; ``None`` when something is missing."""
    if checkpoint.hub_repo:
        return _hub_fetch(checkpoint, model_dir, local_only=True, quiet=True)
    paths = _url_files(checkpoint, model_dir)
    for path, expected in zip(paths, checkpoint.expected(), strict=True):
        if not path.is_file() or (expected and sha256_of(path) != expected):
            return None
    return url_target(checkpoint, model_dir)


def fetch(checkpoint: Checkpoint, model_dir: Path, policy: HttpPolicy | None = None) -> Path:
    """Download what is missing; returns the file (one) or the folder (several)."""
    if checkpoint.hub_repo:
        path = _hub_fetch(checkpoint, model_dir, local_only=False, quiet=False, policy=policy)
        assert path is not None
        return path
    for path, url, expected in zip(
        _url_files(checkpoint, model_dir), checkpoint.urls, checkpoint.expected(), strict=True
    ):
        download_weights(url, path, expected, policy)
    return url_target(checkpoint, model_dir)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_fetch(
    checkpoint: Checkpoint,
    model_dir: Path,
    *,
    local_only: bool,
    quiet: bool,
    policy: HttpPolicy | None = None,
) -> Path | None:
    """All files of a Hub checkpoint through ``hf_hub_download`` (same snapshot folder).

    huggingface_hub keeps its own HTTP client and retries; the policy's read timeout bounds
    its metadata request (``etag_timeout``), the sha256 rule is ``checksums``'."""
    from huggingface_hub import hf_hub_download  # only apps with Hub checkpoints need it
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, revision = checkpoint.hub_repo or "", checkpoint.revision
    cache = model_dir / HUB_CACHE
    offline = _offline()
    folder: Path | None = None
    for name, expected in zip(checkpoint.files, checkpoint.expected(), strict=True):
        try:
            path = Path(
                hf_hub_download(
                    repo,
                    name,
                    revision=revision,
                    cache_dir=cache,
                    local_files_only=local_only or offline,
                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                    etag_timeout=(policy or DOWNLOAD_POLICY).read_timeout_s,
                )
            )
        except LocalEntryNotFoundError as exc:
            if quiet:
                return None
            how = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
            raise WeightsError(
                f"checkpoint {checkpoint.name!r}: {repo}/{name} (revision "
                f"{revision or 'main'}) is not in the cache {cache} and {how}: run once "
                "online (or build the image with this checkpoint) to fill the cache"
            ) from exc
        except (HfHubHTTPError, OSError, ValueError) as exc:
            if quiet:
                return None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(
                f"checkpoint {checkpoint.name!r}: could not download {repo}/{name} (revision "
                f"{revision or 'main'}) from the Hub: {first}"
            ) from exc
        if expected and sha256_of(path) != expected:
            if quiet:
                return None
            raise WeightsError(
                f"checkpoint {checkpoint.name!r}: {repo}/{name} does not match sha256 "
                f"{expected} (got {sha256_of(path)}); not using it"
            )
        folder = path.parent
    return folder if len(checkpoint.files) > 1 else folder / checkpoint.files[0]  # type: ignore[operator]


def resolve(
    settings: AppSettings,
    checkpoint: Checkpoint,
    model_dir: Path | None = None,
    policy: HttpPolicy | None = None,
) -> Path:
    """The checkpoint in the model dir, then ``$<PREFIX>_WEIGHTS`` (file or folder, used as
    given), then a download."""
    directory = Path(model_dir) if model_dir is not None else settings.default_model_dir()
    found = local(checkpoint, directory)
    if found is not None:
        return found
    if override := os.environ.get(settings.weights_env):
        path = Path(override).expanduser()
        if path.is_file() or (path.is_dir() and any(p.is_file() for p in path.iterdir())):
            return path
        raise WeightsError(
            f"${settings.weights_env} is {override!r}, which is neither a file nor a folder "
            f"holding a checkpoint's files; fix it, or unset it to download checkpoint "
            f"{checkpoint.name!r} into {directory}"
        )
    try:
        return fetch(checkpoint, directory, policy)
    except WeightsError as exc:
        raise WeightsError(f"{exc} (or set ${settings.weights_env} to the weights)") from exc
