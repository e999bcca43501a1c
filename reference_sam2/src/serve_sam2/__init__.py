"""A Supervisely video mask tracking app; its settings are in ``settings.SETTINGS``."""

from .settings import SETTINGS

__version__ = SETTINGS.app_version
__all__ = ["__version__"]
