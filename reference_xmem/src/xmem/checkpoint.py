"""Loading XMem checkpoints safely and with errors a user can act on."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .network import XMemNetwork


class CheckpointError(ValueError):
    """The file is not a usable XMem state_dict (wrong keys/shapes, or refused pickle)."""


def _expected_shapes(dims: Mapping[str, int]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    # Meta device: shapes without allocating or initialising 62M parameters.
    with torch.device("meta"):
        net = XMemNetwork(**dims)
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def _listing(names: list[str], limit: int = 5) -> str:
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, int]:
    """Validate keys and shapes against the architecture the dims imply; return the dims.

    Raises CheckpointError naming a few missing / unexpected / mis-shaped keys with counts.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise CheckpointError(
            f"{source}: expected a state_dict (dict of name -> tensor), "
            f"got {type(state_dict).__name__}"
        )
    bad_values = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise CheckpointError(
            f"{source}: {len(bad_values)} entries are not tensors: {_listing(bad_values)}"
        )
    dims = XMemNetwork.dims_from_state_dict(state_dict)
    expected = _expected_shapes(dims)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {list(state_dict[k].shape)} (expected {list(shape)})"
        for k, (shape, _) in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped key(s): {_listing(misshaped, 3)}")
    if problems:
        raise CheckpointError(
            f"{source} is not an XMem checkpoint for key_dim={dims['key_dim']}, "
            f"value_dim={dims['value_dim']}, hidden_dim={dims['hidden_dim']}: "
            + "; ".join(problems)
        )
    return dims


def widen_single_object(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single-object checkpoint has 4 value-encoder input channels; add a zero 5th
    ('others') channel as upstream's load_weights does, so it runs in multi-object mode."""
    w = state_dict.get("value_encoder.conv1.weight")
    if w is not None and w.dim() == 4 and w.shape[1] == 4:
        state_dict = dict(state_dict)
        state_dict["value_encoder.conv1.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
    return state_dict


def read_state_dict(weights_path: str | Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True; anything that needs arbitrary code is refused."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"XMem weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused for safety: the file is not a weights-only checkpoint (it needs "
            f"arbitrary Python objects to unpickle, which could run code). Re-save a plain "
            f"state_dict of tensors. Details: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # truncated / not a torch file at all
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint: {exc}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict, got {type(obj).__name__}")
    return dict(obj)


def network_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "state_dict"
) -> XMemNetwork:
    """Strictly load a state_dict into a network sized from it (no random init wasted)."""
    sd = widen_single_object(dict(state_dict))
    dims = check_state_dict(sd, source)
    with torch.device("meta"):
        net = XMemNetwork(**dims)
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    net.load_state_dict(sd, strict=True, assign=True)
    return net.eval()


def load_network(weights_path: str | Path, device: str | torch.device = "cpu") -> XMemNetwork:
    """Read a checkpoint (weights-only), infer dims, strict-load, eval mode, move to device."""
    sd = read_state_dict(weights_path)
    net = network_from_state_dict(sd, str(weights_path))
    return net.to(device)
