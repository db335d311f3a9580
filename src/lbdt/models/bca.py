"""Bilateral Channel Activation (docs/model.md, 'BCA'): fuses the two decoded streams under the sentence."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class BCA(nn.Module):
    """Language gates a = sigmoid(Lin([g; s])) and consistency gates e = sigmoid(Lin(c)), c = ReLU(Lin([g_S; g_T])).

    Official names: `img_flo_fc.0` = joint, `img_txt_fc`/`flo_txt_fc` = spatial/temporal_language_gate,
    `img_enhance_fc`/`flo_enhance_fc` = spatial/temporal_consistency_gate, `fusion_cat_conv` = fuse.
    """

    def __init__(self, *, dim: int = 128, text_dim: int = 512) -> None:
        super().__init__()
        self.joint = nn.Linear(2 * dim, dim)
        self.spatial_language_gate = nn.Linear(dim + text_dim, dim)
        self.temporal_language_gate = nn.Linear(dim + text_dim, dim)
        self.spatial_consistency_gate = nn.Linear(dim, dim)
        self.temporal_consistency_gate = nn.Linear(dim, dim)
        self.fuse = nn.Sequential(nn.Conv2d(2 * dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim),
                                  nn.ReLU(inplace=True))

    def forward(self, spatial: Tensor, temporal: Tensor, sentence: Tensor) -> Tensor:
        """spatial, temporal D [B,dim,h,w]; sentence [B,text_dim] -> Z [B,dim,h,w]."""
        g_s = spatial.flatten(2).mean(dim=2)  # [B,dim]
        g_t = temporal.flatten(2).mean(dim=2)
        joint = F.relu(self.joint(torch.cat([g_s, g_t], dim=1)))  # c [B,dim]
        a_s = torch.sigmoid(self.spatial_language_gate(torch.cat([g_s, sentence], dim=1)))
        a_t = torch.sigmoid(self.temporal_language_gate(torch.cat([g_t, sentence], dim=1)))
        e_s = torch.sigmoid(self.spatial_consistency_gate(joint))
        e_t = torch.sigmoid(self.temporal_consistency_gate(joint))
        spatial = spatial * a_s[:, :, None, None] * e_s[:, :, None, None]
        temporal = temporal * a_t[:, :, None, None] * e_t[:, :, None, None]
        return self.fuse(torch.cat([spatial, temporal], dim=1))
