"""Golden weight recipe v1 (tests/data/GOLDEN.md section 2): deterministic XMem weights
anyone can rebuild with numpy, used for parity tests in place of the real XMem.pth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .network import XMemNetwork

SEED = 20261123
RECIPE_VERSION = "xmem-golden-recipe-v1"


def _recipe_value(i: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key.endswith("num_batches_tracked"):
        return np.array(0, dtype=np.int64)
    if key == "decoder.pred.bias":
        return np.full(shape, -0.75, dtype=np.float32)
    z = np.random.default_rng(SEED + i).standard_normal(shape, dtype=np.float32)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return z * np.float32(math.sqrt(1.0 / fan_in))
    if key.endswith(".running_mean"):
        return z * np.float32(0.1)
    if key.endswith(".running_var"):
        return np.float32(1) + np.abs(z) * np.float32(0.1)
    if key.endswith(".bias"):
        return z * np.float32(0.05)
    if key.endswith(".weight"):
        return np.float32(1) + z * np.float32(0.1)
    raise ValueError(f"recipe has no rule for {key} {shape}")


def recipe_state_dict(
    key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64
) -> dict[str, torch.Tensor]:
    """The recipe state_dict, keys in sorted (code-point) order = recipe index i."""
    with torch.device("meta"):
        shapes = {
            k: tuple(v.shape)
            for k, v in XMemNetwork(key_dim, value_dim, hidden_dim).state_dict().items()
        }
    return {
        key: torch.from_numpy(_recipe_value(i, key, shapes[key]).copy(order="C"))
        for i, key in enumerate(sorted(shapes))
    }


def write_recipe_weights(path: str | Path) -> Path:
    """torch.save the recipe state_dict (about 249 MB) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(recipe_state_dict(), path)
    return path
