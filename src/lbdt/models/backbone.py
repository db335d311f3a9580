"""ResNet (v1.5: stride on the 3x3 conv) returning the stage outputs res2..res5
(docs/model.md, 'Spatial and temporal encoders').

Parameter names match torchvision's (`conv1`, `bn1`, `layer1`..`layer4`, blocks with
`conv1..conv3`, `bn1..bn3`, `downsample.0/.1`), so the ImageNet `resnet50-0676ba61.pth` file loads
with `load_torchvision_state_dict`. There is no classifier: `fc.*` is dropped on load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from lbdt.errors import LBDTError
from lbdt.models.strict_load import load_strict, read_state_dict

# depth -> bottleneck blocks per stage (depth = 3 * sum(blocks) + 2)
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
TORCHVISION_CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with expansion 4 and a residual connection."""

    expansion = 4

    def __init__(self, *, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet trunk. Stage outputs have 4w, 8w, 16w, 32w channels (w = `width`).

    `stem(x)`: [B,3,H,W] -> [B,w,H/4,W/4]; `layer1..layer4` give res2..res5 at strides 4, 8, 16, 32.
    The stages are exposed (not one `forward`) because LBDT interleaves both streams after res4.
    """

    def __init__(self, *, depth: int = 50, width: int = 64) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise LBDTError(f"unsupported ResNet depth {depth}; choose one of {sorted(DEPTHS)}")
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = width
        stages = []
        for i, blocks in enumerate(DEPTHS[depth]):
            stage_width = width * 2**i
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(Bottleneck(in_channels=in_channels, width=stage_width, stride=stride))
                in_channels = stage_width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = tuple(width * Bottleneck.expansion * 2**i for i in range(4))  # res2..res5
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: Tensor) -> Tensor:
        """[B,3,H,W] -> [B,w,H/4,W/4]: conv7x7/2, BN, ReLU, maxpool/2."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> list[Tensor]:
        """[B,3,H,W] -> [res2, res3, res4, res5] (without any LBDT module in between)."""
        x = self.layer1(self.stem(x))
        outs = [x]
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def load_torchvision_state_dict(self, path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> None:
        """Load a torchvision ResNet state dict (e.g. `resnet50-0676ba61.pth`) strictly.

        Only `fc.weight` / `fc.bias` are dropped; BN `num_batches_tracked` may be absent (old files).
        Any other missing, unexpected or mis-shaped key raises `LBDTError` naming the keys.
        """
        source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "state dict"
        sd = read_state_dict(path_or_state_dict, what="torchvision ResNet weights")
        sd = {k: v for k, v in sd.items() if k not in TORCHVISION_CLASSIFIER_KEYS}
        optional = [k for k in self.state_dict() if k.endswith("num_batches_tracked")]
        load_strict(self, sd, source=source, optional=optional)
