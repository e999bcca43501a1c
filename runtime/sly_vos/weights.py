"""Find, download and verify the model weights; load checkpoints without running their code.

Where the weights come from (``resolve_weights``): ``<model_dir>/<weights_filename>`` when it
matches the sha256, then the file named by ``$<PREFIX>_WEIGHTS``, then a download of
``settings.weights_url`` into ``model_dir``. A model that declares named ``CHECKPOINTS``
goes through ``checkpoints.resolve`` instead (same order, the chosen checkpoint's files).
The Docker image bakes the weights in at build time::

    python -m sly_vos.weights PACKAGE [--dest DIR] [--url URL] [--sha256 HEX] [--checkpoint NAME]
                              [--if-required]

How a download works and what it guarantees: ``sly_vos.download`` (``download_weights``).

Decisions (documented for users of the template; the download's own are in ``download``):

* The ``$<PREFIX>_WEIGHTS`` override is used as given, without the checksum: it is how you run
  your own (fine-tuned) file. ``load_checkpoint`` still refuses code in it. It may also name
  a folder (a checkpoint of several files, such as transformers' config.json +
  model.safetensors): the model then gets the folder.

Errors are ``WeightsError`` (defined in ``download``), deliberately not a ``RuntimeError``:
the SDK retries ``load_on_device`` on CPU after a ``RuntimeError``, which would only repeat
the failure.
The module imports neither the Supervisely SDK nor torch (``load_checkpoint`` imports torch).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from .download import (
    WeightsError,
    download_weights,
    expected_sha256,
    is_usable,
    lock_path,
    part_path,
    sha256_of,
)
from .transport import DOWNLOAD_POLICY, HttpPolicy

if TYPE_CHECKING:
    from .settings import AppSettings

__all__ = [
    "WeightsError",
    "download_weights",
    "load_checkpoint",
    "lock_path",
    "main",
    "part_path",
    "resolve_weights",
    "sha256_of",
]

log = logging.getLogger(__name__)


def _download_for(
    settings: AppSettings,
    url: str | None,
    directory: Path,
    sha256: str | None,
    policy: HttpPolicy | None,
) -> Path:
    """``download_weights`` into ``directory`` as the app: its user agent, its variable named."""
    if not url:
        raise WeightsError(
            f"{settings.model_name} needs a weights file and no weights URL is set: set "
            f"weights_url in {settings.package}/settings.py (or pass a URL), put "
            f"{settings.weights_filename} in {directory}, or set ${settings.weights_env} to "
            "a weights file"
        )
    policy = policy or DOWNLOAD_POLICY
    if policy.user_agent is None:
        policy = replace(policy, user_agent=f"{settings.app_slug}/{settings.app_version}")
    try:
        return download_weights(url, directory / settings.weights_filename, sha256, policy)
    except WeightsError as exc:
        raise WeightsError(f"{exc} (or set ${settings.weights_env} to a weights file)") from exc


def resolve_weights(
    settings: AppSettings,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None | EllipsisType = ...,
    policy: HttpPolicy | None = None,
) -> Path:
    """The weights file to load: model_dir, then ``$<weights_env>``, then a download.

    ``model_dir`` defaults to ``settings.default_model_dir()``, ``url``/``sha256`` to the
    settings' (``sha256=None`` skips the check). A model_dir file that fails the check is
    skipped (and moved aside if a download replaces it).
    """
    directory = Path(model_dir) if model_dir is not None else settings.default_model_dir()
    expected = expected_sha256(settings.weights_sha256 if sha256 is ... else sha256)
    local = directory / settings.weights_filename
    if local.is_file():
        if is_usable(local, expected):
            return local
        log.warning("%s does not match sha256 %s; not using it", local, expected)
    if override := os.environ.get(settings.weights_env):
        path = Path(override).expanduser()
        if not (path.is_file() or _is_checkpoint_dir(path)):
            raise WeightsError(
                f"${settings.weights_env} is {override!r}, which is neither a file nor a "
                f"folder holding a checkpoint's files; fix it, or unset it to download the "
                f"weights into {directory}"
            )
        return path
    return _download_for(settings, url or settings.weights_url, directory, expected, policy)


def _is_checkpoint_dir(path: Path) -> bool:
    """A folder with at least one file: a checkpoint of several files (e.g. transformers'
    config.json + model.safetensors) reaches the model as the folder holding them."""
    return path.is_dir() and any(child.is_file() for child in path.iterdir())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors.

    Weights-only loading rebuilds tensors and plain containers and never calls anything a
    pickle names, so a checkpoint carrying code is refused before any of it runs.
    """
    import torch  # here, so the download CLI does not need torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if unsafe := re.search(r"GLOBAL\s+([\w.]+)", text):
            raise WeightsError(
                f"refused for safety: checkpoint {path} refers to {unsafe[1]}, which could run "
                "code when unpickled; checkpoints are loaded weights-only "
                "(torch.load(weights_only=True) rebuilds only tensors and plain containers), "
                "so nothing in it was run. If you trust the file, re-save its tensors as a "
                "plain state_dict"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint that weights-only loading can read (corrupt, "
            f"truncated or another format): {detail[1] if detail else text.splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch reports bad files as RuntimeError, EOFError, KeyError...
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another "
            f"format): {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        ) from exc
    if not isinstance(loaded, dict):
        raise WeightsError(
            f"checkpoint {path} holds a {type(loaded).__name__}; expected a dict "
            "(a state_dict or a dict holding one)"
        )
    return loaded


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sly_vos.weights",
        description="Download and verify an app's weights into a directory (the Docker image "
        "runs this at build time). Prints the file's path.",
    )
    add = parser.add_argument
    add("package", help="the app's package (its settings.SETTINGS and model.WEIGHTS_REQUIRED)")
    add("--dest", type=Path, help="directory (default: $<PREFIX>_MODEL_DIR, /weights, ~/.cache)")
    add("--url", help="download from this URL (default: the app's weights_url)")
    add("--sha256", help="checksum, empty for none (default: the app's, or none with --url)")
    add(
        "--checkpoint",
        help="a named checkpoint of the model's CHECKPOINTS (default: $<PREFIX>_CHECKPOINT, "
        "else --url when given, else the declared default)",
    )
    add("--if-required", action="store_true", help="do nothing when the model needs no weights")
    add("--quiet", action="store_true", help="no progress bar or notes")
    add("--attempts", type=int, default=DOWNLOAD_POLICY.attempts, help="requests in all")
    add("--backoff", type=float, default=DOWNLOAD_POLICY.backoff_s, help="retry n waits S*2^(n-1)")
    add("--read-timeout", type=float, default=DOWNLOAD_POLICY.read_timeout_s, help="seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI body: 0 on success, 1 with one ``error:`` line on stderr on failure."""
    from . import checkpoints  # no SDK either
    from .appspec import AppSpec, AppSpecError  # pydantic, no SDK; the app's modules on use

    args = _parser().parse_args(argv)
    try:
        spec = AppSpec.from_package(args.package)
        settings = spec.settings
        if args.if_required and not spec.weights_required:
            if not args.quiet:
                print(
                    f"{settings.model_name} needs no weights file; nothing to do", file=sys.stderr
                )
            return 0
        sha256 = settings.weights_sha256 if args.sha256 is None and not args.url else args.sha256
        policy = replace(
            DOWNLOAD_POLICY,
            attempts=args.attempts,
            backoff_s=args.backoff,
            backoff_max_s=max(DOWNLOAD_POLICY.backoff_max_s, args.backoff),
            read_timeout_s=args.read_timeout,
            quiet=args.quiet,
        )
        directory = args.dest if args.dest is not None else settings.default_model_dir()
        declared = checkpoints.declared(spec.model)
        chosen = args.checkpoint or os.environ.get(settings.checkpoint_env, "").strip()
        # A checkpoint named explicitly wins; otherwise --url (a mirror of the one weights
        # file) as for a model without checkpoints, else the declared default.
        use_url = bool(args.url) and not chosen
        checkpoint = None if use_url else checkpoints.select(settings, declared, chosen or None)
        if checkpoint is not None:
            found = checkpoints.local(checkpoint, directory)
            path = found or checkpoints.fetch(checkpoint, directory, policy)
        else:
            url = args.url or settings.weights_url
            path = _download_for(settings, url, directory, expected_sha256(sha256), policy)
    except (WeightsError, AppSpecError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cli() -> int:
    """``python -m`` entry: notes to stderr (none with ``--quiet``), then ``main``."""
    level = logging.ERROR + 10 if "--quiet" in sys.argv[1:] else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    return main()


if __name__ == "__main__":
    from . import weights as _module  # the importable copy, so its WeightsError is the one

    raise SystemExit(_module._cli())
