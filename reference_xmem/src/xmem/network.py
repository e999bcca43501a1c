"""The XMem network: encoders, key projection and decoder, checkpoint-compatible.

Only the neural parts live here; memory and the per-frame schedule are in
`memory.py` / `inference.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .modules import Decoder, KeyEncoder, KeyProjection, ValueEncoder

DEFAULT_DIMS = {"key_dim": 64, "value_dim": 512, "hidden_dim": 64}


def aggregate(prob: torch.Tensor, dim: int) -> torch.Tensor:
    """Soft aggregation: add background = prod(1 - p), clamp to [1e-7, 1 - 1e-7], softmax of
    log-odds. The clamp point matters: saturated objects must tie exactly as upstream.
    Always fp32 (1 - 1e-7 does not exist in fp16 or bf16)."""
    prob = prob.float()
    new_prob = torch.cat([torch.prod(1 - prob, dim=dim, keepdim=True), prob], dim)
    new_prob = new_prob.clamp(1e-7, 1 - 1e-7)
    logits = torch.log(new_prob / (1 - new_prob))
    return torch.softmax(logits, dim=dim)


class XMemNetwork(nn.Module):
    """XMem with state_dict keys/shapes identical to upstream's `model.network.XMem`.

    Built from scratch with default init; never downloads pretrained backbones because a
    checkpoint always overwrites them.
    """

    def __init__(self, key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64) -> None:
        super().__init__()
        if key_dim <= 0 or value_dim <= 0 or hidden_dim < 0:
            raise ValueError(
                f"bad dims key_dim={key_dim} value_dim={value_dim} hidden_dim={hidden_dim}"
            )
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.hidden_dim = hidden_dim
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder(value_dim, hidden_dim)
        self.key_proj = KeyProjection(1024, key_dim)
        self.decoder = Decoder(value_dim, hidden_dim)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def dims_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Read key/value/hidden dims from checkpoint tensors as upstream does
        (missing hidden_update = hidden state disabled, hidden_dim 0)."""
        dims = dict(DEFAULT_DIMS)
        if "key_proj.key_proj.weight" in state_dict:
            dims["key_dim"] = int(state_dict["key_proj.key_proj.weight"].shape[0])
        if "value_encoder.fuser.block2.conv2.weight" in state_dict:
            dims["value_dim"] = int(state_dict["value_encoder.fuser.block2.conv2.weight"].shape[0])
        if "decoder.hidden_update.transform.weight" in state_dict:
            transform = state_dict["decoder.hidden_update.transform.weight"]
            dims["hidden_dim"] = int(transform.shape[0]) // 3
        elif any(k.startswith("decoder.") for k in state_dict):
            # An XMem decoder without hidden_update: hidden state disabled.
            # (A file with no decoder at all is not XMem; keep the defaults so the
            # error lists the keys a standard checkpoint needs.)
            dims["hidden_dim"] = 0
        return dims

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> XMemNetwork:
        """An (uninitialised-weights) network whose dims fit `state_dict`."""
        return cls(**cls.dims_from_state_dict(state_dict))

    # ---------------------------------------------------------------------- forwards
    def encode_key(
        self, frame: torch.Tensor, need_s: bool = True, need_e: bool = True
    ) -> tuple[
        torch.Tensor,
        torch.Tensor | None,
        torch.Tensor | None,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
    ]:
        """frame [B, 3, H, W] -> key, shrinkage, selection, f16, f8, f4 (B may batch frames)."""
        f16, f8, f4 = self.key_encoder(frame)
        key, shrinkage, selection = self.key_proj(f16, need_s, need_e)
        return key, shrinkage, selection, f16, f8, f4

    def encode_value(
        self,
        frame: torch.Tensor,
        f16: torch.Tensor,
        hidden: torch.Tensor | None,
        masks: torch.Tensor,
        deep_update: bool = True,
        share_image: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """masks [B, K, H, W] soft probabilities; 'others' = sum of the other objects'.
        share_image: compute the image half of the fusion conv once for all objects."""
        k = masks.shape[1]
        if k != 1:
            # Same summation as upstream (index-select then sum), not total - self.
            others = torch.cat(
                [
                    masks[:, [j for j in range(k) if j != i]].sum(dim=1, keepdim=True)
                    for i in range(k)
                ],
                dim=1,
            )
        else:
            others = torch.zeros_like(masks)
        return self.value_encoder(frame, f16, hidden, masks, others, deep_update, share_image)

    def segment(
        self,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        readout: torch.Tensor,
        hidden: torch.Tensor | None,
        h_out: bool = True,
        share_image: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Decode and soft-aggregate; returns (new hidden or None, prob [B, K+1, H, W])."""
        new_hidden, logits = self.decoder(
            f16, f8, f4, hidden, readout, h_out=h_out, share_image=share_image
        )
        prob = aggregate(torch.sigmoid(logits), dim=1)
        return new_hidden, prob

    def forward(self, *args, **kwargs):  # pragma: no cover - XMem is driven step by step
        raise NotImplementedError("use encode_key / encode_value / segment, or xmem.segment_video")
