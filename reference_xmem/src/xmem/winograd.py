"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), built on matrix products.

Each 4x4 block of output needs 36 multiplications per channel pair instead of direct
convolution's 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016). Written as PyTorch's own tuned operations (a strided convolution for the input
tiles, matrix products for the per-position channel sums, the output tiles and the
filter), it runs on the oneDNN and BLAS of whatever CPU serves it, so it does not hang on
NNPACK, which lost to oneDNN's direct convolution on an AVX-512 Xeon and whose batched
path is slow (several objects at once). It is one more candidate that `conv.py` times per
shape; nothing picks it without measuring.

Layout: the input transform is a stride-4 convolution of every channel with the 36
transform kernels (no gathered copy of the overlapping tiles: 8-28 % faster than gather
and product at 10 of 11 XMem shapes tried on an AMD EPYC, 3 ms slower at the smallest,
15x27); the channel product is [O, C] x [C, tiles] per tile position, image by image, so
the filter transform comes out contiguous and the output tiles are written back row by
row (the other orientation spent a third of the time in a channel-innermost scatter at
120x216).

Memory stays bounded: the filter transform is recomputed on every call (one small product;
cached, it would hold four times the weights of every 3x3 convolution, about 900 MB for
XMem) in slices of output channels of at most FILTER_FLOATS, and the tiles go through the
products in bands of tile rows of at most BAND_FLOATS per buffer. Results differ from
direct convolution by float rounding only (~1e-5 relative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TILE = 4  # output block side; the input block is TILE + 2
FILTER_FLOATS = 1 << 24  # 64 MB of transformed filter (36 x C x O slice) at a time
BAND_FLOATS = 1 << 23  # 32 MB per tile buffer (36 x tiles x channels) in one pass
# The F(4x4, 3x3) transforms, from the interpolation points 0, +-1, +-2 and infinity.
_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def _kron(rows: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """M (x) M: applies M on both sides of a tile flattened row-major, as one product."""
    m = torch.tensor(rows, dtype=torch.float64)
    return torch.kron(m, m).float()


_INPUT = _kron(_BT)  # [36, 36]
_FILTER = _kron(_G)  # [36, 9]
_OUTPUT = _kron(_AT)  # [16, 36]


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` for fp32 x [N, C, H, W], weight [O, C, 3, 3]."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    th, tw = -(-h // TILE), -(-w // TILE)
    from_tiles, to_filter = _OUTPUT.to(x.device), _FILTER.to(x.device)
    to_tiles = _INPUT.to(x.device).view(36, 1, TILE + 2, TILE + 2)
    step = max(1, FILTER_FLOATS // (36 * c))  # output channels per filter slice
    slices = [(o0, min(o, o0 + step)) for o0 in range(0, o, step)]

    def transformed(o0: int, o1: int) -> torch.Tensor:  # [36, o1 - o0, C]
        return (to_filter @ weight[o0:o1].reshape(-1, 9).t()).view(36, o1 - o0, c)

    whole = transformed(0, o) if len(slices) == 1 else None
    # Tiles of TILE + 2 overlapping by 2, over the input padded by 1 (and up to whole tiles),
    # every channel its own single-channel image.
    padded = F.pad(x, (1, TILE * tw + 1 - w, 1, TILE * th + 1 - h))
    planes = padded.reshape(n * c, 1, TILE * th + 2, TILE * tw + 2)  # copies if channels-last
    out = torch.empty((n, o, TILE * th, TILE * tw), dtype=x.dtype, device=x.device)
    rows = max(1, BAND_FLOATS // (36 * n * tw * max(c, min(o, step))))
    for r0 in range(0, th, rows):
        r1 = min(th, r0 + rows)
        # The input transform as a strided convolution with 36 output channels (one per
        # tile position): no gathered copy of the overlapping tiles. [N, C, 36, band tiles]
        v = F.conv2d(planes[:, :, TILE * r0 : TILE * r1 + 2], to_tiles, stride=TILE)
        v = v.view(n, c, 36, -1)
        for o0, o1 in slices:
            u = whole if whole is not None else transformed(o0, o1)
            for i in range(n):
                # [36, C, tiles] with strided rows, which BLAS reads in place
                m = torch.bmm(u, v[i].transpose(0, 1))  # [36, O slice, tiles]: channel sums
                y = (from_tiles @ m.view(36, -1)).view(TILE, TILE, o1 - o0, r1 - r0, tw)
                block = out[i, o0:o1, TILE * r0 : TILE * r1]
                block.view(o1 - o0, r1 - r0, TILE, tw, TILE).copy_(y.permute(2, 3, 0, 4, 1))
    out = out[:, :, :h, :w]
    if bias is not None:
        return out + bias.view(1, -1, 1, 1)
    return out.contiguous()
