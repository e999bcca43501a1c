"""Checkpoint-compatible re-implementation of XMem (Cheng & Schwing, ECCV 2022) inference."""

from .checkpoint import CheckpointError, load_network, network_from_state_dict
from .inference import DEFAULT_CONFIG, XMemEngine, propagate, segment_video
from .network import XMemNetwork

__all__ = [
    "DEFAULT_CONFIG",
    "CheckpointError",
    "XMemEngine",
    "XMemNetwork",
    "load_network",
    "network_from_state_dict",
    "propagate",
    "segment_video",
]
