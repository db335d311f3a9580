"""The training loss of the original (docs/training.md, 'Loss'): 0.5 · BCE(pos_weight 1.5) + 0.5 · Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bce_loss(logits: Tensor, target: Tensor, pos_weight: float = 1.5) -> Tensor:
    """Mean over pixels and batch of −[w·y·log σ(z) + (1−y)·log(1−σ(z))]; logits, target [B,H,W]."""
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight)


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-4, smooth: float = 1.0) -> Tensor:
    """Per sample 1 − (2Σp·y + s)/(Σp + Σy + s) with p = clamp(σ(z), eps, 1−eps); mean over the batch.

    logits, target [B,H,W] (any trailing shape; the sums run over everything but dim 0).
    """
    p = torch.sigmoid(logits).clamp(eps, 1.0 - eps).flatten(1)
    y = target.to(p.dtype).flatten(1)
    dice = 1.0 - (2.0 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return dice.mean()


def segmentation_loss(logits: Tensor, target: Tensor, *, pos_weight: float = 1.5, bce_weight: float = 0.5,
                      dice_weight: float = 0.5) -> dict[str, Tensor]:
    """{"bce", "dice", "loss"} where loss = bce_weight·BCE + dice_weight·Dice; computed in float32.

    logits [B,H,W] (raw scores), target [B,H,W] in {0,1}.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    logits = logits.float()
    bce = bce_loss(logits, target, pos_weight)
    dice = dice_loss(logits, target)
    return {"bce": bce, "dice": dice, "loss": bce_weight * bce + dice_weight * dice}
