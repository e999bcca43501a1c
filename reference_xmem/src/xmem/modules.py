"""XMem building blocks: group convs, CBAM, fusion, hidden-state gates, decoder.

Object-dependent tensors are "group" tensors [B, K, C, H, W]; group convs fold B*K into
the batch. Module attribute names mirror the upstream checkpoint keys, including the
registration order (e.g. `downsample` before `conv1`), so state_dict order matches too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv2d, conv2d, conv_bn, version_tag
from .resnet import BasicBlock, Bottleneck, make_stage, make_stem_parts


# ----------------------------------------------------------------------------- groups
def group_apply(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Run a 4-D module over a [B, K, C, H, W] tensor by folding objects into the batch."""
    b, k = g.shape[:2]
    out = module(g.flatten(0, 1))
    return out.reshape(b, k, *out.shape[1:])


def resize_groups(g: torch.Tensor, ratio: float, mode: str) -> torch.Tensor:
    """Scale a group tensor by `ratio` (scale_factor, exact: sizes are multiples of 16)."""
    b, k = g.shape[:2]
    align = False if mode == "bilinear" else None
    out = F.interpolate(g.flatten(0, 1), scale_factor=ratio, mode=mode, align_corners=align)
    return out.reshape(b, k, *out.shape[1:])


def cat_shared(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Put the shared image feature [B, C, H, W] in front of every object's channels."""
    k = g.shape[1]
    return torch.cat([x.unsqueeze(1).expand(-1, k, -1, -1, -1), g], dim=2)


class GroupResBlock(nn.Module):
    """Pre-activation residual block without BN; 3x3 conv shortcut when widths differ."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = None if cin == cout else Conv2d(cin, cout, 3, padding=1)
        self.conv1 = Conv2d(cin, cout, 3, padding=1)
        self.conv2 = Conv2d(cout, cout, 3, padding=1)
        self._split_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        b, k = g.shape[:2]
        x = g.flatten(0, 1)
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        short = x if self.downsample is None else self.downsample(x)
        out = out + short
        return out.reshape(b, k, *out.shape[1:])

    def _split(self, conv: nn.Conv2d, cx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous [:, :cx] / [:, cx:] weight halves, cached until the weight changes."""
        w = conv.weight
        tag = version_tag(w) + (cx,)
        hit = self._split_cache.get(id(conv))
        if hit is None or hit[0] != tag:
            hit = (tag, (w[:, :cx].contiguous(), w[:, cx:].contiguous()))
            self._split_cache[id(conv)] = hit
        return hit[1]

    def forward_shared(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Same as forward(cat_shared(x, g)) but the image part of the first conv and of the
        shortcut is computed once instead of once per object (conv is linear in its input
        channels). Saves most of the fusion cost with several objects; differs from the
        concatenated form only by float rounding."""
        if self.downsample is None:
            return self.forward(cat_shared(x, g))
        b, k = g.shape[:2]
        cx = x.shape[1]
        gf = g.flatten(0, 1)
        w1x, w1g = self._split(self.conv1, cx)
        wdx, wdg = self._split(self.downsample, cx)
        h = conv2d(F.relu(gf), w1g, None, padding=1).reshape(b, k, -1, *gf.shape[-2:]) + conv2d(
            F.relu(x), w1x, self.conv1.bias, padding=1
        ).unsqueeze(1)
        short = conv2d(gf, wdg, None, padding=1).reshape(b, k, -1, *gf.shape[-2:]) + conv2d(
            x, wdx, self.downsample.bias, padding=1
        ).unsqueeze(1)
        out = self.conv2(F.relu(h.flatten(0, 1)))
        return out.reshape(b, k, *out.shape[1:]) + short


# ------------------------------------------------------------------------------- CBAM
class ChannelGate(nn.Module):
    """Shared MLP over global avg- and max-pooled features, summed, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # Index 0 (Flatten) and 2 (ReLU) carry no weights: keys are mlp.1 and mlp.3.
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = (x.shape[2], x.shape[3])
        att = self.mlp(F.avg_pool2d(x, hw, stride=hw)) + self.mlp(F.max_pool2d(x, hw, stride=hw))
        return x * torch.sigmoid(att)[:, :, None, None]


class _SpatialConv(nn.Module):
    """Wrapper so the key reads `SpatialGate.spatial.conv` like upstream's BasicConv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, stride=1, padding=3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """7x7 conv over [max, mean] across channels (that order), sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate (names as in the checkpoint)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """block1([x, g]) -> + CBAM of itself -> block2; fuses image and per-object features."""

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupResBlock(mid_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor, share_image: bool = False) -> torch.Tensor:
        b, k = g.shape[:2]
        if share_image and k > 1:
            g = self.block1.forward_shared(x, g)
        else:
            g = self.block1(cat_shared(x, g))
        r = self.attention(g.flatten(0, 1)).reshape(b, k, *g.shape[2:])
        return self.block2(g + r)


# ---------------------------------------------------------------------- hidden state
def gated_update(values: torch.Tensor, h: torch.Tensor, hidden_dim: int) -> torch.Tensor:
    """XMem's non-standard gate, kept as is for weight compatibility:
    h' = f * h * (1 - u) + u * n with f, u sigmoid and n tanh (no reset gate)."""
    forget = torch.sigmoid(values[:, :, :hidden_dim])
    update = torch.sigmoid(values[:, :, hidden_dim : 2 * hidden_dim])
    new_value = torch.tanh(values[:, :, 2 * hidden_dim :])
    return forget * h * (1 - update) + update * new_value


class HiddenReinforcer(nn.Module):
    """Deep update: refresh the hidden state from the freshly encoded value."""

    def __init__(self, g_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = Conv2d(g_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        values = group_apply(self.transform, torch.cat([g, h], dim=2))
        return gated_update(values, h, self.hidden_dim)


class HiddenUpdater(nn.Module):
    """Light update from the decoder's multi-scale features on non-memory frames."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = nn.Conv2d(g_dims[0], mid_dim, 1)
        self.g8_conv = nn.Conv2d(g_dims[1], mid_dim, 1)
        self.g4_conv = nn.Conv2d(g_dims[2], mid_dim, 1)
        self.transform = Conv2d(mid_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(
        self, g16: torch.Tensor, g8: torch.Tensor, g4: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        g = (
            group_apply(self.g16_conv, g16)
            + group_apply(self.g8_conv, resize_groups(g8, 1 / 2, "area"))
            + group_apply(self.g4_conv, resize_groups(g4, 1 / 4, "area"))
        )
        values = group_apply(self.transform, torch.cat([g, h], dim=2))
        return gated_update(values, h, self.hidden_dim)


# ----------------------------------------------------------------------------- encoders
class KeyEncoder(nn.Module):
    """ResNet-50 to stage 3; returns f16, f8, f4. Stage 1 is named `res2` upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = make_stem_parts(3)
        self.res2 = make_stage(Bottleneck, 64, 64, 3, 1)
        self.layer2 = make_stage(Bottleneck, 256, 128, 4, 2)
        self.layer3 = make_stage(Bottleneck, 512, 256, 6, 2)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(conv_bn(f, self.conv1, self.bn1)))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class ValueEncoder(nn.Module):
    """ResNet-18 to stage 3 on [image, mask, others] per object, fused with f16."""

    def __init__(self, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = make_stem_parts(5)
        self.layer1 = make_stage(BasicBlock, 64, 64, 2, 1)
        self.layer2 = make_stage(BasicBlock, 64, 128, 2, 2)
        self.layer3 = make_stage(BasicBlock, 128, 256, 2, 2)
        self.fuser = FeatureFusionBlock(1024, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def forward(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        h: torch.Tensor | None,
        masks: torch.Tensor,
        others: torch.Tensor,
        deep_update: bool = True,
        share_image: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = cat_shared(image, torch.stack([masks, others], dim=2))  # [B, K, 5, H, W]
        b, k = g.shape[:2]
        x = g.flatten(0, 1)
        # Upstream order: max-pool before ReLU (they commute).
        x = self.relu(self.maxpool(conv_bn(x, self.conv1, self.bn1)))
        x = self.layer3(self.layer2(self.layer1(x)))
        g = x.reshape(b, k, *x.shape[1:])
        g = self.fuser(f16, g, share_image)
        if deep_update and self.hidden_reinforce is not None and h is not None:
            h = self.hidden_reinforce(g, h)
        return g, h


class KeyProjection(nn.Module):
    """key, shrinkage (d^2 + 1, >= 1) and selection (sigmoid) heads on f16."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = Conv2d(in_dim, key_dim, 3, padding=1)

    def forward(
        self, x: torch.Tensor, need_s: bool = True, need_e: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        shrinkage = self.d_proj(x) ** 2 + 1 if need_s else None
        selection = torch.sigmoid(self.e_proj(x)) if need_e else None
        return self.key_proj(x), shrinkage, selection


# ------------------------------------------------------------------------------ decoder
class UpsampleBlock(nn.Module):
    """x2 bilinear upsample of the group feature plus a shared skip conv, then a res block."""

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = Conv2d(skip_dim, up_dim, 3, padding=1)
        self.out_conv = GroupResBlock(up_dim, out_dim)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = self.skip_conv(skip)
        g = resize_groups(g, 2, "bilinear") + s.unsqueeze(1)
        return self.out_conv(g)


class Decoder(nn.Module):
    """Memory readout (+ hidden) fused with f16, upsampled to stride 4, one logit per object."""

    def __init__(self, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fuser = FeatureFusionBlock(1024, value_dim + hidden_dim, 512, 512)
        self.hidden_update = (
            HiddenUpdater((512, 256, 256 + 1), 256, hidden_dim) if hidden_dim > 0 else None
        )
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = Conv2d(256, 1, 3, padding=1)

    def forward(
        self,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        hidden: torch.Tensor | None,
        readout: torch.Tensor,
        h_out: bool = True,
        share_image: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        b, k = readout.shape[:2]
        if self.hidden_update is not None and hidden is not None:
            g16 = self.fuser(f16, torch.cat([readout, hidden], dim=2), share_image)
        else:
            g16 = self.fuser(f16, readout, share_image)
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4.flatten(0, 1)))  # [B*K, 1, H/4, W/4]
        new_hidden = None
        if h_out and self.hidden_update is not None and hidden is not None:
            g4 = torch.cat([g4, logits.reshape(b, k, 1, *logits.shape[-2:])], dim=2)
            new_hidden = self.hidden_update(g16, g8, g4, hidden)
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return new_hidden, logits.reshape(b, k, *logits.shape[-2:])
