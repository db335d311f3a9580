"""The faithful resize/target rule (hand-computed) and clip-consistent augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lbdt.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipAugment,
    ClipTransform,
    resize_image,
    resize_target,
    swap_left_right,
)


def test_constant_frame_is_normalised_exactly():
    frame = np.empty((37, 53, 3), dtype=np.uint8)
    frame[:] = (10, 128, 250)
    x = ClipTransform((64, 32))(frame, frame, None, "s").frame
    assert x.shape == (3, 64, 32) and x.dtype == torch.float32
    for c, v in enumerate((10, 128, 250)):
        assert torch.allclose(x[c], torch.full((64, 32), (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]), atol=1e-6)


def test_single_pixel_upsampled_is_dilated_to_3x3():
    # 5 -> 9 with align_corners: output y samples source y/2; source pixel 2 reaches outputs 3, 4, 5 (weights > 0)
    m = np.zeros((5, 5), dtype=bool)
    m[2, 2] = True
    out = resize_target(m, (9, 9))
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = 1
    assert torch.equal(out, expected)


def test_single_pixel_downsampled_survives_only_on_a_sample_point():
    # 9 -> 5: output y samples source 2y exactly, so a pixel at an even position survives alone and an
    # odd one vanishes (no sample point falls strictly between its neighbours)
    even = np.zeros((9, 9), dtype=bool)
    even[4, 4] = True
    out = resize_target(even, (5, 5))
    assert out.sum() == 1 and out[2, 2] == 1
    odd = np.zeros((9, 9), dtype=bool)
    odd[3, 3] = True
    assert resize_target(odd, (5, 5)).sum() == 0


def test_thin_line_is_thickened():
    m = np.zeros((5, 8), dtype=bool)
    m[2, 1:7] = True  # one row, columns 1..6
    out = resize_target(m, (9, 15))  # x scale: source x = 0.5 * output x
    expected = torch.zeros(9, 15)
    expected[3:6, 1:14] = 1  # columns with 0.5 x in (0, 7): 1..13
    assert torch.equal(out, expected)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_swap_left_right_whole_words_keeps_case():
    assert swap_left_right("the dog on the left") == "the dog on the right"
    assert swap_left_right("Left of the RIGHT car, bright light") == "Right of the LEFT car, bright light"
    assert swap_left_right("leftmost man moving leftwards, leftover food") == \
        "rightmost man moving rightwards, leftover food"
    assert swap_left_right("left-hand side") == "right-hand side"
    assert swap_left_right("copyright upright") == "copyright upright"


def _clip(h=24, w=40, seed=0):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    mask[3:9, 2:11] = True  # left part only: asymmetric
    return frame, ref, mask


def test_flip_applies_to_both_frames_mask_and_sentence():
    frame, ref, mask = _clip()
    t = ClipTransform((32, 64))
    flipped = t.apply(ClipAugment(flip=True), frame, ref, mask, "the bright cube on the left")
    plain = t.apply(ClipAugment(), frame[:, ::-1], ref[:, ::-1], mask[:, ::-1], "x")
    assert torch.equal(flipped.frame, plain.frame)
    assert torch.equal(flipped.ref_frame, plain.ref_frame)
    assert torch.equal(flipped.mask, plain.mask)
    assert torch.equal(flipped.mask, torch.flip(t.apply(ClipAugment(), frame, ref, mask, "x").mask, dims=[1]))
    assert flipped.sentence == "the bright cube on the right"


def test_crop_applies_to_frames_and_mask():
    frame, ref, mask = _clip()
    t = ClipTransform((32, 32))
    out = t.apply(ClipAugment(crop=(2, 5, 20, 30)), frame, ref, mask, "s")
    plain = t.apply(ClipAugment(), frame[2:22, 5:35], ref[2:22, 5:35], mask[2:22, 5:35], "s")
    assert torch.equal(out.frame, plain.frame) and torch.equal(out.ref_frame, plain.ref_frame)
    assert torch.equal(out.mask, plain.mask)


def test_colour_jitter_is_shared_by_both_frames():
    frame, _, mask = _clip()
    t = ClipTransform((32, 32))
    out = t.apply(ClipAugment(brightness=1.2, contrast=0.8, saturation=1.1), frame, frame.copy(), mask, "s")
    assert torch.equal(out.frame, out.ref_frame)  # identical inputs stay identical: temporal input untouched
    assert not torch.allclose(out.frame, t.apply(ClipAugment(), frame, frame, mask, "s").frame)


def test_draws_are_deterministic_and_off_by_default():
    t = ClipTransform((32, 32), augment=True)
    a = t.draw(np.random.default_rng(5), (24, 40))
    assert a == t.draw(np.random.default_rng(5), (24, 40))
    draws = [t.draw(np.random.default_rng(s), (24, 40)) for s in range(40)]
    assert {d.flip for d in draws} == {True, False}
    assert any(d.crop is not None for d in draws)
    for d in draws:
        if d.crop is not None:
            top, left, h, w = d.crop
            assert 0 <= top and top + h <= 24 and 0 <= left and left + w <= 40
            assert h >= round(24 * 0.75) - 1 and w >= round(40 * 0.75) - 1
    assert ClipTransform((32, 32)).draw(np.random.default_rng(5), (24, 40)) == ClipAugment()


@pytest.mark.parametrize("size", [(32, 64), (64, 32)])
def test_output_shapes(size):
    frame, ref, mask = _clip()
    out = ClipTransform(size, augment=True)(frame, ref, mask, "left", np.random.default_rng(0))
    assert out.frame.shape == out.ref_frame.shape == (3, *size) and out.mask.shape == size
    assert resize_image(frame, size).shape == (3, *size)
