import numpy as np
import pytest

from lbdt.errors import LBDTError
from lbdt.evaluation.evaluators import METRIC_LABELS, JFEvaluator, ReferSegEvaluator
from lbdt.evaluation.metrics import boundary_f, coco_mask_map
from lbdt.types import Prediction, SampleMeta


def _meta(video="v", obj="1", frame="00000", exp="", stype=""):
    return SampleMeta(dataset="synthetic", video_id=video, object_id=obj, frame_id=frame, ref_frame_id=frame,
                      sentence="s", original_size=(4, 4), expression_id=exp, group=stype)


def _mask(n_on, shape=(4, 4)):
    m = np.zeros(shape, bool)
    m.flat[:n_on] = True
    return m


def test_refer_seg_counts_every_sample_and_hand_values():
    gt = _mask(4)
    ev = ReferSegEvaluator()
    # IoUs: 4/4 = 1, 2/4 = 0.5 (smoothed: just above), 0/4 = 0, empty vs empty = 1
    ev.update(Prediction(meta=_meta(stype="appearance"), mask=_mask(4)), gt)
    ev.update(Prediction(meta=_meta(stype="motion"), mask=_mask(2)), gt)
    ev.update(Prediction(meta=_meta(stype="motion"), mask=~_mask(4)), gt)
    ev.update(Prediction(meta=_meta(stype="appearance"), mask=_mask(0)), _mask(0))
    out = ev.compute()
    assert out["N"] == 4
    assert out["P@0.5"] == 0.75 and out["P@0.6"] == 0.5 and out["P@0.9"] == 0.5
    assert out["overall_iou"] == pytest.approx((4 + 2 + 0 + 0) / (4 + 4 + 16 + 0))
    assert out["mean_iou"] == pytest.approx((1 + 0.5 + 0 + 1) / 4, abs=1e-6)
    assert out["lbdt_ap"] == pytest.approx((10 + 1 + 0 + 10) / 40)
    assert out["precision_rule"] == "IoU >= K"
    assert set(out["by_group"]) == {"appearance", "motion"}
    assert out["by_group"]["motion"]["N"] == 2
    assert out["by_group"]["motion"]["mean_iou"] == pytest.approx(0.25, abs=1e-6)
    assert out["by_group"]["appearance"]["P@0.9"] == 1.0
    assert "coco_map" not in out
    assert all(k in METRIC_LABELS for k in out if k not in ("precision_rule", "by_group"))


def test_refer_seg_n_equals_samples_fed():
    rng = np.random.default_rng(0)
    ev = ReferSegEvaluator()
    for i in range(37):  # not a multiple of any batch size
        ev.update(Prediction(meta=_meta(frame=str(i)), mask=rng.random((5, 6)) > 0.5), rng.random((5, 6)) > 0.5)
    assert ev.compute()["N"] == 37 == len(ev)
    assert "by_group" not in ev.compute()
    ev.reset()
    with pytest.raises(LBDTError, match="no samples"):
        ev.compute()


def test_refer_seg_strict_and_coco():
    rng = np.random.default_rng(3)
    gts = [rng.random((8, 8)) > 0.5 for _ in range(6)]
    preds = [g ^ (rng.random((8, 8)) < 0.2) for g in gts]
    scores = list(rng.random(6))
    ev = ReferSegEvaluator(strict=True, coco=True)
    for g, p, s in zip(gts, preds, scores):
        ev.update(Prediction(meta=_meta(), mask=p, score=float(s)), g)
    out = ev.compute()
    ref = coco_mask_map(gts, preds, scores)
    assert (out["coco_map"], out["coco_ap50"], out["coco_ap75"]) == (ref["mAP"], ref["AP50"], ref["AP75"])
    assert out["precision_rule"] == "IoU > K"
    ev2 = ReferSegEvaluator()
    ev2.update(Prediction(meta=_meta(), mask=_mask(2)), _mask(4))
    ev3 = ReferSegEvaluator(strict=True)
    ev3.update(Prediction(meta=_meta(), mask=_mask(2)), _mask(4))
    # smoothed IoU (2+1e-6)/(4+1e-6) is just above 0.5, so it passes either rule
    assert ev2.compute()["P@0.5"] == 1.0 and ev3.compute()["P@0.5"] == 1.0


def test_missing_or_mismatched_gt_is_an_error():
    ev = ReferSegEvaluator()
    with pytest.raises(LBDTError, match="no ground truth"):
        ev.update(Prediction(meta=_meta(), mask=_mask(1)), None)
    with pytest.raises(LBDTError, match="differ in size"):
        ev.update(Prediction(meta=_meta(), mask=_mask(1)), np.zeros((3, 3), bool))


def test_jf_evaluator_per_expression_then_mean():
    ev = JFEvaluator()
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    shifted = np.zeros((10, 10), bool)
    shifted[2:6, 5:9] = True
    # expression v/0: two frames, J = 1 and J = 4/28, F = 1 and 9/16
    ev.update(Prediction(meta=_meta(exp="0", frame="0"), mask=a), a)
    ev.update(Prediction(meta=_meta(exp="0", frame="1"), mask=shifted), a)
    # expression v/1: one frame, both empty -> J = F = 1
    ev.update(Prediction(meta=_meta(exp="1", frame="0"), mask=np.zeros((10, 10), bool)), np.zeros((10, 10), bool))
    out = ev.compute()
    j0, f0 = (1 + 4 / 28) / 2, (1 + boundary_f(shifted, a)) / 2
    assert boundary_f(shifted, a) == pytest.approx(9 / 16)
    assert out["N"] == 3 and out["num_expressions"] == 2
    assert out["J"] == pytest.approx((j0 + 1) / 2)
    assert out["F"] == pytest.approx((f0 + 1) / 2)
    assert out["J&F"] == pytest.approx((out["J"] + out["F"]) / 2)


def test_jf_evaluator_without_expression_ids_keys_on_sentence():
    ev = JFEvaluator()
    full, empty = np.ones((6, 6), bool), np.zeros((6, 6), bool)
    m1 = SampleMeta(dataset="a2d", video_id="v", object_id="1", frame_id="0", ref_frame_id="0", sentence="a",
                    original_size=(6, 6))
    m2 = SampleMeta(dataset="a2d", video_id="v", object_id="1", frame_id="0", ref_frame_id="0", sentence="b",
                    original_size=(6, 6))
    ev.update(Prediction(meta=m1, mask=full), full)  # J = 1
    ev.update(Prediction(meta=m2, mask=empty), full)  # J = 0
    out = ev.compute()
    assert out["num_expressions"] == 2 and out["J"] == 0.5
