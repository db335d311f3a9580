"""Hand-computed values for every metric in lbdt.evaluation.metrics."""

import numpy as np
import pytest
from scipy import ndimage

from lbdt.evaluation.metrics import (
    AP_THRESHOLDS,
    boundary_f,
    boundary_map,
    boundary_precision_recall,
    boundary_tolerance,
    coco_mask_map,
    intersection_union,
    iou,
    jf_per_expression,
    lbdt_ap,
    mean_iou,
    overall_iou,
    precision_at,
    region_f,
    region_similarity,
    rle_encode,
)


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# 4x4: pred has 4 pixels, gt has 6, they share 3 -> I = 3, U = 7
PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
GT = np.array([[0, 1, 1, 0], [1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def test_intersection_union_and_iou_hand_values():
    assert intersection_union(PRED, GT) == (3, 7)
    assert iou(PRED, GT) == pytest.approx((3 + 1e-6) / (7 + 1e-6), abs=0)
    assert iou(PRED, GT, eps=0) == 3 / 7
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0  # smoothing makes two empty masks agree
    assert iou(empty, GT) == pytest.approx(1e-6 / (6 + 1e-6))


def test_inputs_not_modified_and_shape_checked():
    prob_like = PRED.copy()
    gt_copy = GT.copy()
    iou(prob_like, gt_copy), region_f(prob_like, gt_copy), boundary_f(prob_like, gt_copy)
    assert np.array_equal(prob_like, PRED) and prob_like.dtype == np.uint8
    assert np.array_equal(gt_copy, GT)
    with pytest.raises(ValueError, match="shapes differ"):
        iou(PRED, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        region_similarity(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


def test_precision_at_exact_thresholds():
    ious = [0.5, 0.6, 0.7, 0.8, 0.9, 0.2]
    ge = precision_at(ious)  # LBDT: >=
    assert ge == {0.5: 5 / 6, 0.6: 4 / 6, 0.7: 3 / 6, 0.8: 2 / 6, 0.9: 1 / 6}
    gt = precision_at(ious, strict=True)  # MTTR: >
    assert gt == {0.5: 4 / 6, 0.6: 3 / 6, 0.7: 2 / 6, 0.8: 1 / 6, 0.9: 0.0}
    assert precision_at([0.5])[0.5] == 1.0 and precision_at([0.5], strict=True)[0.5] == 0.0
    with pytest.raises(ValueError):
        precision_at([])


def test_ap_thresholds_are_exact_decimals():
    assert AP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    # an IoU of exactly 3/5 passes the 0.6 threshold (np.arange would give 0.6000000000000001)
    assert precision_at([3 / 5], AP_THRESHOLDS)[0.6] == 1.0


def test_lbdt_ap_hand_made_list():
    # IoU 0.62 passes 0.50, 0.55, 0.60 (3 of 10); 0.95 passes all 10; 0.1 none; 0.75 passes 6
    assert lbdt_ap([0.62, 0.95, 0.1, 0.75]) == pytest.approx((3 + 10 + 0 + 6) / 40)
    assert lbdt_ap([1.0, 1.0]) == 1.0


def test_overall_and_mean_iou():
    assert overall_iou([3, 0, 5], [7, 2, 5]) == pytest.approx(8 / 14)
    assert overall_iou([0, 0], [0, 0]) == 1.0
    assert mean_iou([0.2, 0.4, 0.9]) == pytest.approx(0.5)


def test_region_f_is_smoothed_pixel_f1():
    # precision 3/4, recall 3/6 -> F1 = 2 * 0.75 * 0.5 / 1.25 = 0.6 (Dice = 2*3/(4+6))
    assert region_f(PRED, GT) == pytest.approx(0.6, abs=1e-6)
    assert region_f(np.zeros((2, 2)), np.zeros((2, 2))) == pytest.approx(1.0)


def test_region_similarity_davis_edge_cases():
    empty = np.zeros((4, 4), bool)
    assert region_similarity(PRED, GT) == 3 / 7
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(empty, GT) == 0.0
    assert region_similarity(GT, empty) == 0.0


def disk(r):
    """Reference structuring element: skimage.morphology.disk(r) = offsets with x² + y² ≤ r²."""
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def reference_precision_recall(pred, gt, radius):
    """The toolkit's recipe literally: dilate both boundary maps with disk(radius) and count (non-empty cases)."""
    pb, gb = boundary_map(pred), boundary_map(gt)
    pd = ndimage.binary_dilation(pb, structure=disk(radius))
    gd = ndimage.binary_dilation(gb, structure=disk(radius))
    return (pb & gd).sum() / pb.sum(), (gb & pd).sum() / gb.sum()


def test_reference_disk():
    assert np.array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert disk(2).sum() == 13 and disk(8).sum() == 197


@pytest.mark.parametrize("seed", range(6))
def test_boundary_precision_recall_equals_disk_dilation(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 90, size=2)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-5, 5), w / 2 + rng.uniform(-5, 5)
    ry, rx = rng.uniform(3, h / 3), rng.uniform(3, w / 3)
    gt = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1)) ^ (rng.random((h, w)) < 0.02)
    for bound_th in (0.008, 0.05, 3):
        radius = boundary_tolerance((h, w), bound_th)
        ours = boundary_precision_recall(pred, gt, bound_th)
        assert ours == pytest.approx(reference_precision_recall(pred, gt, radius))


def test_boundary_map_ring_and_border_quirks():
    # a 2x2 square at rows/cols 1..2 -> the ring of the 3x3 block at rows/cols 0..2
    bmap = boundary_map(square(4, 4, 1, 3, 1, 3))
    ring = np.zeros((4, 4), bool)
    ring[0:3, 0:3] = True
    ring[1, 1] = False
    assert np.array_equal(bmap, ring)
    # a mask on the last column: its own pixels are not drawn, the column to its left is
    right_edge = np.zeros((3, 3), bool)
    right_edge[:, 2] = True
    expected = np.zeros((3, 3), bool)
    expected[:, 1] = True
    assert np.array_equal(boundary_map(right_edge), expected)
    # a full frame has no boundary at all
    assert not boundary_map(np.ones((5, 6), bool)).any()


def test_boundary_tolerance():
    assert boundary_tolerance((480, 854)) == 8  # 0.008 * 979.6 = 7.84 -> 8 (DAVIS 480p)
    assert boundary_tolerance((10, 10)) == 1
    assert boundary_tolerance((10, 10), bound_th=3) == 3


def test_boundary_f_identical_and_far_apart():
    a = square(40, 40, 5, 15, 5, 15)
    assert boundary_f(a, a) == 1.0
    far = square(40, 40, 25, 35, 25, 35)  # tolerance ceil(0.008 * 56.6) = 1 px; shifted by 20
    assert boundary_precision_recall(far, a) == (0.0, 0.0)
    assert boundary_f(far, a) == 0.0


def test_boundary_f_hand_computed_shift():
    # 10x10, tolerance 1 (cross-shaped disk). GT square rows/cols 2..5 -> outline ring rows/cols 1..5
    # (16 px). Pred shifted right by 3 -> ring rows 1..5, cols 4..8. Pred ring pixels within 1 px
    # (4-neighbourhood) of the GT ring: (1,4..6), (5,4..6), (2..4,4) = 9 of 16; symmetric for recall.
    gt = square(10, 10, 2, 6, 2, 6)
    pred = square(10, 10, 2, 6, 5, 9)
    assert boundary_precision_recall(pred, gt) == (9 / 16, 9 / 16)
    assert boundary_f(pred, gt) == pytest.approx(9 / 16)
    # with a 3-px tolerance every pixel of either ring is within reach of the other
    assert boundary_f(pred, gt, bound_th=3) == 1.0


def test_boundary_f_empty_edge_cases():
    empty = np.zeros((10, 10), bool)
    a = square(10, 10, 2, 6, 2, 6)
    assert boundary_precision_recall(empty, empty) == (1.0, 1.0)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_precision_recall(empty, a) == (1.0, 0.0)  # only the prediction is empty
    assert boundary_precision_recall(a, empty) == (0.0, 1.0)  # only the GT is empty
    assert boundary_f(empty, a) == 0.0 and boundary_f(a, empty) == 0.0
    # the toolkit's quirk: a full-frame mask has no boundary, so it "matches" an empty one
    assert boundary_f(np.ones((10, 10), bool), empty) == 1.0


def test_jf_per_expression_averages_frames_then_expressions():
    scores = {"v/0": [(1.0, 0.5), (0.0, 0.5)], "v/1": [(0.2, 0.9)]}
    out = jf_per_expression(scores)
    # per expression: J = 0.5, 0.2; F = 0.5, 0.9 -> J = 0.35, F = 0.7 (a frame-pooled mean would give J = 0.4)
    assert out["J"] == pytest.approx(0.35)
    assert out["F"] == pytest.approx(0.7)
    assert out["J&F"] == pytest.approx(0.525)
    assert out["num_expressions"] == 2


# ------------------------------------------------------------------ COCO mAP


def _direct_coco(gts, preds_per_image):
    """Reference: pycocotools objects built by hand, as MTTR does (one image and one GT per sample)."""
    from pycocotools import mask as mu
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    anns, imgs = [], []
    for i, m in enumerate(gts):
        rle = mu.encode(np.asfortranarray(m.astype(np.uint8)))
        imgs.append({"id": i + 1, "height": m.shape[0], "width": m.shape[1]})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": rle,
                     "area": float(mu.area(rle)), "bbox": list(mu.toBbox(rle)), "iscrowd": 0})
    gt.dataset = {"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "dummy"}]}
    gt.createIndex()
    dets = [
        {"image_id": i + 1, "category_id": 1, "score": s, "segmentation": mu.encode(np.asfortranarray(m.astype(np.uint8)))}
        for i, plist in enumerate(preds_per_image) for m, s in plist
    ]
    ev = COCOeval(gt, gt.loadRes(dets), iouType="segm")
    ev.params.useCats = 0
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def _random_blob(rng, h, w):
    y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
    return square(h, w, y0, y0 + rng.integers(4, 12), x0, x0 + rng.integers(4, 12)) | (rng.random((h, w)) < 0.03)


def test_coco_map_one_mask_per_sample_matches_pycocotools():
    rng = np.random.default_rng(0)
    gts = [_random_blob(rng, 24, 30) for _ in range(12)]
    preds = [g ^ (rng.random(g.shape) < 0.1 * (i % 4)) for i, g in enumerate(gts)]
    scores = [float(s) for s in rng.random(12)]
    ours = coco_mask_map(gts, preds, scores)
    ref = _direct_coco(gts, [[(p, s)] for p, s in zip(preds, scores)])
    assert ours == {"mAP": pytest.approx(ref[0]), "AP50": pytest.approx(ref[1]), "AP75": pytest.approx(ref[2])}
    assert 0.0 < ours["mAP"] < 1.0


def test_coco_map_several_masks_per_sample_matches_pycocotools():
    rng = np.random.default_rng(1)
    gts = [_random_blob(rng, 20, 20) for _ in range(8)]
    preds = [np.stack([_random_blob(rng, 20, 20) for _ in range(3)] + [g]) for g in gts]  # [4,H,W]
    scores = [list(rng.random(4)) for _ in gts]
    ours = coco_mask_map([rle_encode(g) for g in gts], preds, scores)  # RLE input accepted too
    ref = _direct_coco(gts, [list(zip(p, s)) for p, s in zip(preds, scores)])
    assert ours["mAP"] == pytest.approx(ref[0])
    assert ours["AP50"] == pytest.approx(ref[1])
    assert ours["AP75"] == pytest.approx(ref[2])


def test_coco_map_perfect_and_checks():
    gts = [square(16, 16, 2, 9, 3, 12), square(16, 16, 5, 14, 0, 6)]
    assert coco_mask_map(gts, gts, [0.9, 0.8]) == {"mAP": pytest.approx(1.0), "AP50": pytest.approx(1.0),
                                                   "AP75": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="scores"):
        coco_mask_map(gts, [np.stack(gts), gts[1]], [[0.5], 0.5])
