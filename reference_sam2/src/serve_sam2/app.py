"""The Supervisely serving class of this app: the runtime's ``TrackingApp`` around ``model``.

``sly_vos.TrackingApp`` (a ``supervisely.nn.inference.MaskTracking``) serves every endpoint
the labeling tool calls, checks each request, maps object ids and tracks all objects of a
request jointly, one frame at a time. This class only says which model and settings; add
methods here when your app needs more (e.g. extra fields in ``get_info``).
"""

from __future__ import annotations

from sly_vos import TrackingApp

from . import model
from .settings import SETTINGS


class SAM21Tracker(TrackingApp):
    """The model of ``settings.SETTINGS``, served as a Supervisely mask tracker."""

    settings = SETTINGS
    model = model
