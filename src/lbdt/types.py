"""Typed containers that cross module boundaries.

Shapes use B = batch, N = number of word tokens (25 by default), H, W = model input size,
H0, W0 = original frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class SampleMeta:
    """Where a sample comes from; enough to write its prediction back and to evaluate it."""

    dataset: str  # "a2d" | "jhmdb" | "ytvos" | "synthetic" | "video"
    video_id: str
    object_id: str  # instance / object id as a string (ytvos valid: the expression id)
    frame_id: str  # annotated (target) frame name, e.g. "00017"
    ref_frame_id: str  # reference frame actually used (t - k, clamped)
    sentence: str
    original_size: tuple[int, int]  # (H0, W0)
    expression_id: str = ""  # Ref-YouTube-VOS expression id where it exists
    group: str = ""  # the record's category (A2D actor-action, J-HMDB action, synthetic sentence type); "" if none


@dataclass
class ClipSample:
    """One training/evaluation sample: target frame, reference frame, sentence, target mask."""

    frame: Tensor  # float32 [3,H,W], ImageNet-normalised target frame I_t
    ref_frame: Tensor  # float32 [3,H,W], ImageNet-normalised reference frame I_{t-k}
    word_vectors: Tensor  # float32 [N,300] word vectors (zeros for OOV and pads)
    word_mask: Tensor  # float32 [N], 1 for real tokens, 0 for pads
    meta: SampleMeta
    mask: Tensor | None = None  # float32 [H,W] in {0,1}: target at model resolution (docs/training.md)
    original_mask: np.ndarray | None = None  # bool [H0,W0]: ground truth at native resolution


@dataclass
class Batch:
    """A collated batch of `ClipSample`s (see `lbdt.data.collate.collate`)."""

    frames: Tensor  # float32 [B,3,H,W]
    ref_frames: Tensor  # float32 [B,3,H,W]
    word_vectors: Tensor  # float32 [B,N,300]
    word_mask: Tensor  # float32 [B,N]
    metas: list[SampleMeta]
    masks: Tensor | None = None  # float32 [B,H,W] in {0,1}
    original_masks: list[np.ndarray] | None = None  # B x bool [H0,W0]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            frames=move(self.frames),
            ref_frames=move(self.ref_frames),
            word_vectors=move(self.word_vectors),
            word_mask=move(self.word_mask),
            masks=move(self.masks),
        )


@dataclass
class Prediction:
    """One predicted mask for one (video, object/expression, frame), at the original size."""

    meta: SampleMeta
    mask: np.ndarray  # bool [H0,W0]
    score: float = 1.0  # confidence: mean probability inside the mask (0 when the mask is empty)
    prob: np.ndarray | None = None  # float32 [H0,W0] probability map, when requested
    sentence_index: int = 0  # the sentence's position among those segmented together (VideoSegmenter)
    frame_index: int = -1  # the frame's position in its video (VideoSegmenter); -1 for dataset samples
    frame: np.ndarray | None = None  # uint8 [H0,W0,3] the input frame, when requested (`return_frames`)
