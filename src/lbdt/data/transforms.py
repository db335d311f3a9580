"""Frames, target mask and sentence of one clip → model input (docs/model.md, 'Input frames and the temporal
input'; docs/training.md, 'Input size, targets and augmentation').

Default (faithful): both frames plain-resized to (H, W) with PIL bilinear (aspect ratio not kept), scaled to
[0,1] and ImageNet-normalised; the target mask bilinear-resized with align_corners=True as floats, then every
value > 0 set to 1 (this dilates thin structures slightly).

Optional augmentation (`augment=True`; the original used none) is drawn once per clip and applied identically
to both frames, the mask and the sentence: a horizontal flip that swaps left/right words (whole words only,
case kept: left↔right, leftmost↔rightmost, leftward(s)↔rightward(s); "bright" stays "bright"), a random
scale-crop, and a colour jitter (brightness, contrast, saturation) with the same factors for both frames so
the temporal input |I_t − I_{t−k}| is not disturbed by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
         "leftward": "rightward", "rightward": "leftward", "leftwards": "rightwards", "rightwards": "leftwards"}
_SIDE_WORD = re.compile(r"\b(" + "|".join(sorted(_SWAP, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def swap_left_right(sentence: str) -> str:
    """Swap left/right words as whole words, keeping their case ("Left" → "Right", "LEFT" → "RIGHT")."""

    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = _SWAP[word.lower()]
        if word.isupper():
            return new.upper()
        if word[0].isupper():
            return new.capitalize()
        return new

    return _SIDE_WORD.sub(swap, sentence)


def side_words() -> list[str]:
    """Every word the flip can introduce (lower case), for word-vector tables."""
    return sorted(_SWAP)


def normalize(image: Tensor) -> Tensor:
    """[3,H,W] in [0,1] → ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(3, 1, 1)
    return image.sub(mean).div_(std)


def resize_image(frame: np.ndarray, size: tuple[int, int]) -> Tensor:
    """uint8 [H0,W0,3] → float32 [3,H,W] in [0,1], PIL bilinear plain resize."""
    h, w = size
    im = Image.fromarray(np.ascontiguousarray(frame))
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1))).float().div_(255.0)


def resize_target(mask: np.ndarray, size: tuple[int, int]) -> Tensor:
    """bool/0-1 [H0,W0] → float32 [H,W] in {0,1}: bilinear (align_corners=True) of the float mask, then > 0."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=True)[0, 0]
    return (m > 0).float()


@dataclass(frozen=True)
class ClipAugment:
    """One draw of the augmentation, shared by every frame, the mask and the sentence of a clip."""

    flip: bool = False
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) in original pixels
    brightness: float = 1.0  # multiplicative factors; 1 = unchanged
    contrast: float = 1.0
    saturation: float = 1.0


@dataclass
class TransformedClip:
    frame: Tensor  # float32 [3,H,W], normalised
    ref_frame: Tensor  # float32 [3,H,W], normalised
    mask: Tensor | None  # float32 [H,W] in {0,1}
    sentence: str


class ClipTransform:
    """Resize/normalise a (frame, reference frame, mask, sentence) clip, optionally augmented."""

    def __init__(self, size: tuple[int, int] = (320, 320), *, augment: bool = False, flip_prob: float = 0.5,
                 min_scale: float = 0.75, jitter: float = 0.2):
        self.size = (int(size[0]), int(size[1]))
        self.augment = augment
        self.flip_prob = flip_prob
        self.min_scale = min_scale
        self.jitter = jitter

    def draw(self, rng: np.random.Generator, original_size: tuple[int, int]) -> ClipAugment:
        """Random parameters for one clip of frames of `original_size` (H0, W0)."""
        if not self.augment:
            return ClipAugment()
        h0, w0 = original_size
        flip = bool(rng.random() < self.flip_prob)
        scale = rng.uniform(self.min_scale, 1.0)
        ch, cw = max(1, round(h0 * scale)), max(1, round(w0 * scale))
        top, left = int(rng.integers(0, h0 - ch + 1)), int(rng.integers(0, w0 - cw + 1))
        crop = None if (ch, cw) == (h0, w0) else (top, left, ch, cw)
        b, c, s = (float(rng.uniform(1 - self.jitter, 1 + self.jitter)) for _ in range(3))
        return ClipAugment(flip=flip, crop=crop, brightness=b, contrast=c, saturation=s)

    def __call__(self, frame: np.ndarray, ref_frame: np.ndarray, mask: np.ndarray | None, sentence: str,
                 rng: np.random.Generator | None = None) -> TransformedClip:
        """frames uint8 [H0,W0,3] (same size), mask bool [H0,W0] or None → `TransformedClip`."""
        aug = self.draw(rng if rng is not None else np.random.default_rng(), frame.shape[:2])
        return self.apply(aug, frame, ref_frame, mask, sentence)

    def apply(self, aug: ClipAugment, frame: np.ndarray, ref_frame: np.ndarray, mask: np.ndarray | None,
              sentence: str) -> TransformedClip:
        """Apply the given draw (deterministic)."""
        arrays = [frame, ref_frame] + ([mask] if mask is not None else [])
        if aug.crop is not None:
            top, left, h, w = aug.crop
            arrays = [a[top:top + h, left:left + w] for a in arrays]
        if aug.flip:
            arrays = [a[:, ::-1] for a in arrays]
            sentence = swap_left_right(sentence)
        images = [resize_image(a, self.size) for a in arrays[:2]]
        if (aug.brightness, aug.contrast, aug.saturation) != (1.0, 1.0, 1.0):
            images = _jitter(images, aug)
        target = resize_target(arrays[2], self.size) if mask is not None else None
        return TransformedClip(normalize(images[0]), normalize(images[1]), target, sentence)


def _jitter(images: list[Tensor], aug: ClipAugment) -> list[Tensor]:
    """Brightness, contrast (around the target frame's mean grey) and saturation, the same for all images."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    mean_grey = (images[0] * aug.brightness * weights).sum(0).mean()
    out = []
    for im in images:
        im = im * aug.brightness
        im = (im - mean_grey) * aug.contrast + mean_grey
        grey = (im * weights).sum(0, keepdim=True)
        im = (im - grey) * aug.saturation + grey
        out.append(im.clamp(0.0, 1.0))
    return out
