"""Faster convolutions for inference, when switched on: Winograd 3x3 and folded batch norm.

Stride-1 3x3 convolutions are about two thirds of XMem's CPU time (decoder at stride 4,
fusion blocks, ResNet bottlenecks). PyTorch's default CPU path (oneDNN) computes them
directly; NNPACK, which ships inside the standard PyTorch wheels, computes the same
convolution with fast (Winograd / FFT) transforms, measured 1.4-2.7x faster on XMem's
shapes at 480p on a 2-core AVX-512 CPU, with relative differences of ~1e-5 (float
rounding). It is off by default and only ever used under `fast_convs()`, for
eligible calls (CPU, float32, no autograd, 3x3, stride 1, padding 1, no groups or
dilation); everything else, and builds without NNPACK, fall back to `F.conv2d`.

In the same context `conv_bn` folds an eval-mode batch norm into the preceding conv's
weights (cached until either changes), which removes the ResNet encoders' separate
normalisation passes over large activations.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("xmem_fast_convs", default=False)
_NNPACK = bool(getattr(torch, "_nnpack_available", lambda: False)())
# NNPACK transforms the kernel on every call, a fixed cost that only large feature maps pay
# back. Measured per 3x3 conv on 2 cores (direct vs NNPACK, ms): 256->256 at 24x32 8.9 vs
# 11.7, at 30x54 16.5 vs 13.6, at 120x214 327 vs 109; 512->512 at 12x16 12 vs 27. Below
# this many pixels per map the direct conv is used (at 480p every XMem map is above it).
NNPACK_MIN_PIXELS = 1536


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK (the standard x86-64 and ARM wheels do)."""
    return _NNPACK


@contextlib.contextmanager
def fast_convs(enabled: bool = True) -> Iterator[None]:
    """In this context (thread/task local), route eligible 3x3 convolutions to NNPACK and
    fold batch norms in `conv_bn`; both only when autograd is off."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, ...] | str:
    return (v, v) if isinstance(v, int) else v


def _eligible(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, ...],
              padding: tuple[int, ...] | str, dilation: tuple[int, ...], groups: int) -> bool:
    return (_NNPACK and _ENABLED.get() and x.dim() == 4 and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32
            and tuple(weight.shape[-2:]) == (3, 3) and tuple(stride) == (1, 1)
            and not isinstance(padding, str) and tuple(padding) == (1, 1)
            and tuple(dilation) == (1, 1) and groups == 1
            and not torch.is_grad_enabled() and x.shape[0] > 0
            and x.shape[-2] * x.shape[-1] >= NNPACK_MIN_PIXELS)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
           dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """`F.conv2d` with the NNPACK route for eligible calls (see module docstring)."""
    if _eligible(x, weight, _pair(stride), _pair(padding), _pair(dilation), groups):
        return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias,
                                                 [1, 1], [1, 1])
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state_dict keys) that may take the NNPACK route."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups)


def version_tag(*tensors: torch.Tensor | None) -> tuple:
    """Changes whenever any tensor is modified in place, replaced, or moved: the key of
    caches of values derived from weights."""
    return tuple(None if t is None else (id(t), t.data_ptr(), t._version, t.dtype, t.device)
                 for t in tensors)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv weight/bias with the eval-mode BN folded in, cached on the conv until any
    parameter or running statistic changes (in place or replaced)."""
    tag = version_tag(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                      bn.running_var) + (bn.eps,)
    cached = conv.__dict__.get("_xmem_folded")
    if cached is not None and cached[0] == tag:
        return cached[1]
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    folded = (weight.contiguous(), bias)
    conv.__dict__["_xmem_folded"] = (tag, folded)
    return folded


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """`bn(conv(x))`; under `fast_convs` (eval-mode BN, no autograd) one conv with the BN
    folded into its weights: the same affine map, rounded differently."""
    if (_ENABLED.get() and not bn.training and bn.track_running_stats and bn.affine
            and bn.running_var is not None and not torch.is_grad_enabled()
            and conv.padding_mode == "zeros"):
        weight, bias = _folded(conv, bn)
        return conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return bn(conv(x))
