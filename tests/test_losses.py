"""The loss against values computed by hand from the formulas in docs/training.md, 'Loss'."""

import math

import pytest
import torch

from lbdt.losses import bce_loss, dice_loss, segmentation_loss


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_bce_and_dice_hand_computed():
    z = torch.tensor([[[2.0, -1.0], [0.0, 3.0]], [[-2.0, -2.0], [1.0, 0.5]]])
    y = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])
    bce_terms, dice_terms = [], []
    for b in range(2):
        sp = sy = spy = 0.0
        for i in range(2):
            for j in range(2):
                p, t = sig(float(z[b, i, j])), float(y[b, i, j])
                bce_terms.append(-(1.5 * t * math.log(p) + (1 - t) * math.log(1 - p)))
                pc = min(max(p, 1e-4), 1 - 1e-4)
                sp, sy, spy = sp + pc, sy + t, spy + pc * t
        dice_terms.append(1 - (2 * spy + 1) / (sp + sy + 1))
    bce = sum(bce_terms) / 8
    dice = sum(dice_terms) / 2
    assert bce_loss(z, y).item() == pytest.approx(bce, rel=1e-6)
    assert dice_loss(z, y).item() == pytest.approx(dice, rel=1e-6)
    terms = segmentation_loss(z, y)
    assert terms["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert terms["dice"].item() == pytest.approx(dice, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(0.5 * bce + 0.5 * dice, rel=1e-6)


def test_dice_clamp_and_empty_target():
    # sigmoid(±50) saturates to 0/1; the clamp keeps p in [1e-4, 1-1e-4].
    z = torch.full((1, 3, 3), -50.0)
    y = torch.zeros(1, 3, 3)
    p = 1e-4
    assert dice_loss(z, y).item() == pytest.approx(1 - 1 / (9 * p + 1), rel=1e-5)
    z = torch.full((1, 2, 2), 50.0)
    y = torch.ones(1, 2, 2)
    p = 1 - 1e-4
    assert dice_loss(z, y).item() == pytest.approx(1 - (2 * 4 * p + 1) / (4 * p + 4 + 1), abs=1e-6)


def test_weights_and_gradient():
    z = torch.randn(2, 4, 4, requires_grad=True)
    y = (torch.rand(2, 4, 4) > 0.5).float()
    terms = segmentation_loss(z, y, pos_weight=1.0, bce_weight=1.0, dice_weight=0.0)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert terms["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    terms["loss"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError):
        segmentation_loss(z, y[:, :3])
