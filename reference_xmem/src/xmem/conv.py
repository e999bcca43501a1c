"""Faster convolutions for inference, when switched on: kernels measured per shape, and
folded batch norm.

Convolutions are most of XMem's CPU time (ResNet trunks, fusion blocks, decoder). Several
kernels compute the same convolution: oneDNN's direct convolution on NCHW (PyTorch's
default), the same on channels-last tensors, NNPACK's Winograd / FFT transforms (stride-1
3x3, fp32; it ships in the standard x86-64 and ARM wheels) on the whole batch or image by
image, our own Winograd F(4x4, 3x3) on the CPU's BLAS (`winograd.py`; stride-1 3x3, fp32),
and for 1x1 convolutions a plain matrix product. Which is fastest depends on the
CPU and the shape, so under `fast_convs()` the first call of each shape times the eligible
candidates and keeps the fastest for the process (`kernels.KernelTuner`; choices are logged
once on the ``xmem.kernels`` logger and listed by `kernel_choices()`). Candidates differ
only by float rounding (~1e-5 relative). Autograd calls, and every call outside the
context, use plain `F.conv2d`.

In the same context `conv_bn` folds an eval-mode batch norm into the preceding conv's
weights (cached until either changes), which removes the ResNet encoders' separate
normalisation passes over large activations.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import winograd
from .kernels import KernelTuner

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("xmem_fast_convs", default=False)
_EXCLUDED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "xmem_excluded_kernels", default=frozenset()
)
_NNPACK = bool(getattr(torch, "_nnpack_available", lambda: False)())
TUNER = KernelTuner()  # this process's measured choices
DIRECT, CHANNELS_LAST, NNPACK, NNPACK_PER_IMAGE, WINOGRAD, GEMM = (
    "direct",
    "channels_last",
    "nnpack",
    "nnpack_per_image",
    "winograd",
    "gemm",
)
KERNELS = (DIRECT, CHANNELS_LAST, NNPACK, NNPACK_PER_IMAGE, WINOGRAD, GEMM)


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK (the standard x86-64 and ARM wheels do)."""
    return _NNPACK


@contextlib.contextmanager
def fast_convs(enabled: bool = True) -> Iterator[None]:
    """In this context (thread/task local), run convolutions with the measured fastest
    kernel per shape and fold batch norms in `conv_bn`; both only when autograd is off."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextlib.contextmanager
def excluded_kernels(names: Iterable[str]) -> Iterator[None]:
    """In this context, never offer these kernels (the direct one always stays): how a
    benchmark shows what the measured choice gives on a CPU where, say, NNPACK loses."""
    names = frozenset(names)
    unknown = names - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernel(s) {sorted(unknown)}; known: {', '.join(KERNELS)}")
    token = _EXCLUDED.set(names - {DIRECT})
    try:
        yield
    finally:
        _EXCLUDED.reset(token)


def kernel_choices() -> dict[str, str]:
    """Every kernel chosen so far in this process, keyed by a readable shape description."""
    return {" ".join(map(str, key)): name for key, name in TUNER.choices().items()}


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, ...] | str:
    return (v, v) if isinstance(v, int) else tuple(v) if not isinstance(v, str) else v


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype F.conv2d will compute in: autocast's, when it is on for this device."""
    if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def candidates(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...] | str,
    dilation: tuple[int, ...],
    groups: int,
) -> dict[str, Callable[[], torch.Tensor]]:
    """Every kernel that computes this convolution (outputs NCHW-contiguous)."""

    def direct() -> torch.Tensor:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    found: dict[str, Callable[[], torch.Tensor]] = {DIRECT: direct}
    if x.dim() != 4 or x.device.type != "cpu":
        return found
    fp32 = _compute_dtype(x) == torch.float32 and weight.dtype == torch.float32
    plain = not isinstance(padding, str) and tuple(dilation) == (1, 1) and groups == 1
    # stride-1 "same" 3x3: what both Winograd kernels (NNPACK's and ours) compute
    same_3x3 = (
        plain
        and tuple(weight.shape[-2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
    )

    def channels_last() -> torch.Tensor:
        xc = x.contiguous(memory_format=torch.channels_last)
        wc = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(xc, wc, bias, stride, padding, dilation, groups).contiguous()

    found[CHANNELS_LAST] = channels_last
    if _NNPACK and fp32 and same_3x3:

        def nnpack() -> torch.Tensor:
            return torch._nnpack_spatial_convolution(
                x.contiguous(), weight.contiguous(), bias, [1, 1], [1, 1]
            )

        found[NNPACK] = nnpack
        if x.shape[0] > 1:
            # PyTorch runs NNPACK's inference algorithm for one image and its batched
            # (training-oriented) one otherwise; per image can be several times faster.
            def nnpack_per_image() -> torch.Tensor:
                wc = weight.contiguous()
                return torch.cat(
                    [
                        torch._nnpack_spatial_convolution(
                            x[i : i + 1].contiguous(), wc, bias, [1, 1], [1, 1]
                        )
                        for i in range(x.shape[0])
                    ]
                )

            found[NNPACK_PER_IMAGE] = nnpack_per_image
    if fp32 and same_3x3:
        found[WINOGRAD] = lambda: winograd.conv3x3(x, weight, bias)
    if (
        fp32
        and plain
        and tuple(weight.shape[-2:]) == (1, 1)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (0, 0)
    ):

        def gemm() -> torch.Tensor:
            b, c, h, w = x.shape
            out = torch.matmul(weight.reshape(weight.shape[0], c), x.reshape(b, c, h * w))
            if bias is not None:
                out = out + bias.reshape(1, -1, 1)
            return out.reshape(b, -1, h, w)

        found[GEMM] = gemm
    excluded = _EXCLUDED.get()
    return {name: fn for name, fn in found.items() if name not in excluded}


def _eligible(x: torch.Tensor) -> bool:
    return (
        _ENABLED.get()
        and x.dim() == 4
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and x.shape[0] > 0
    )


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """`F.conv2d`; under `fast_convs` on CPU, through the kernel measured fastest for this
    shape (see module docstring)."""
    if not _eligible(x):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    st, pad, dil = _pair(stride), _pair(padding), _pair(dilation)
    options = candidates(x, weight, bias, st, pad, dil, groups)
    key = (
        "conv",
        str(_compute_dtype(x)).removeprefix("torch."),
        tuple(x.shape),
        tuple(weight.shape),
        st,
        pad,
        dil,
        groups,
        bias is not None,
        torch.get_num_threads(),
    )
    return TUNER.run(key, options)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state_dict keys) that may take a measured kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super().forward(x)
        return conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def version_tag(*tensors: torch.Tensor | None) -> tuple:
    """Changes whenever any tensor is modified in place, replaced, or moved: the key of
    caches of values derived from weights."""
    return tuple(
        None if t is None else (id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors
    )


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv weight/bias with the eval-mode BN folded in, cached on the conv until any
    parameter or running statistic changes (in place or replaced)."""
    tag = version_tag(
        conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var
    ) + (bn.eps,)
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
    if (
        _ENABLED.get()
        and not bn.training
        and bn.track_running_stats
        and bn.affine
        and bn.running_var is not None
        and not torch.is_grad_enabled()
        and conv.padding_mode == "zeros"
    ):
        weight, bias = _folded(conv, bn)
        return conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return bn(conv(x))
