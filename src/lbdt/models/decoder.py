"""Per-stream decoders and the prediction head, with aligned bilinear upsampling
(docs/model.md, 'Decoders and aligned upsampling', 'Prediction head')."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F


def aligned_upsample(x: Tensor, factor: int) -> Tensor:
    """Aligned bilinear upsampling by an integer factor: [B,C,h,w] -> [B,C,f*h,f*w].

    Replicate-pad one pixel right/bottom, bilinear resize (align_corners=True) to (f*h+1, f*w+1),
    replicate-pad f//2 pixels left/top, keep the top-left f*h x f*w crop.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"aligned upsampling needs a positive integer factor, got {factor}")
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def _conv3x3_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StreamDecoder(nn.Module):
    """One stream: R_i = ReLU(BN(Conv3x3(C_i -> dim))) per level, summed at the finest level.

    D = R_2 + Up2(R_3) + Up4(R_4) + Up8(R_5) (accumulated in that order).
    """

    def __init__(self, *, in_channels: Sequence[int], dim: int = 128) -> None:
        super().__init__()
        self.levels = nn.ModuleList(_conv3x3_bn_relu(c, dim) for c in in_channels)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """[res2 [B,C2,H/4,W/4], res3, res4, res5] -> D [B,dim,H/4,W/4]."""
        out = self.levels[0](features[0])
        for i in range(1, len(self.levels)):
            out = out + aligned_upsample(self.levels[i](features[i]), 2**i)
        return out


class MaskHead(nn.Module):
    """4 x [Conv3x3 + BN + ReLU] then Conv1x1(dim -> 1), aligned x4 upsampling -> logits."""

    def __init__(self, *, dim: int = 128, num_convs: int = 4) -> None:
        super().__init__()
        self.tower = nn.Sequential(*[_conv3x3_bn_relu(dim, dim) for _ in range(num_convs)], nn.Conv2d(dim, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        """z [B,dim,H/4,W/4] -> logits [B,H,W] (the batch dimension is kept for B = 1)."""
        return aligned_upsample(self.tower(z), 4)[:, 0]
