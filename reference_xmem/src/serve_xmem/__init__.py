"""A Supervisely video mask tracking app; names and versions live in ``settings``."""

from .settings import APP_VERSION as __version__

__all__ = ["__version__"]
