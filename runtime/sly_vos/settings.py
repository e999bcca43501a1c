"""What the runtime reads about one app: its names, version, weights and environment.

An app's own ``settings.py`` builds one ``AppSettings`` from its template answers (as
literals, so a reader sees them); everything here derives from those fields, so the names
of environment variables and files are spelled in one place. Answers the runtime never reads
(the app's display name, the SDK pin, the port, the GPU policy) live only where they act:
``config.json``, ``requirements.txt``, ``docker/Dockerfile``, and ``.cruft.json`` records them
(the manifest suite checks that those agree).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .checksums import SHA256_RULE, normalize_sha256

DOCKER_MODEL_DIR = Path("/weights")


class AppSettings(BaseModel):
    """The template answers the runtime reads, validated once at import."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(min_length=1)
    app_slug: str = Field(pattern=r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
    package: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    app_version: str = Field(min_length=1)
    weights_url: str | None = None  # None: nothing to download (a model without weights)
    weights_sha256: str | None = None
    weights_filename: str = Field(min_length=1)
    env_prefix: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")

    @field_validator("weights_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("weights_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        try:
            return normalize_sha256(value)
        except ValueError:  # pydantic names the field and the value
            raise ValueError(SHA256_RULE) from None

    @property
    def weights_env(self) -> str:
        """Path of a weights file to use instead of downloading."""
        return f"{self.env_prefix}_WEIGHTS"

    @property
    def model_dir_env(self) -> str:
        """Where weights are looked for and downloaded to."""
        return f"{self.env_prefix}_MODEL_DIR"

    @property
    def checkpoint_env(self) -> str:
        """Name of the checkpoint to run, for a model that declares ``CHECKPOINTS``; the
        Docker build argument that bakes weights in has the same name."""
        return f"{self.env_prefix}_CHECKPOINT"

    @property
    def device_env(self) -> str:
        """Force ``cpu`` or ``cuda[:N]``."""
        return f"{self.env_prefix}_DEVICE"

    def default_model_dir(self) -> Path:
        """``$<PREFIX>_MODEL_DIR``, else ``/weights`` when it exists (the Docker image), else
        ``~/.cache/<slug>``."""
        configured = os.environ.get(self.model_dir_env)
        if configured:
            return Path(configured).expanduser()
        if DOCKER_MODEL_DIR.is_dir():
            return DOCKER_MODEL_DIR
        return Path.home() / ".cache" / self.app_slug
