"""engine.inference (protocol resize rules, prediction stream with a fake model) and engine.evaluate."""

import numpy as np
import pytest
import torch
from torch import nn

from lbdt.engine.inference import predict, resize_bilinear, resize_nearest, to_original
from lbdt.errors import LBDTError
from lbdt.evaluation.evaluators import ReferSegEvaluator
from lbdt.types import Batch, SampleMeta


class ChannelLogits(nn.Module):
    """Fake model: logits = channel 0 of the frame (so tests choose the probabilities exactly)."""

    def forward(self, frame, ref_frame, word_vectors, word_mask):
        assert frame.shape == ref_frame.shape and word_vectors.shape[:2] == word_mask.shape
        return frame[:, 0]


def logit(p):
    return float(np.log(p / (1 - p)))


def _meta(i, size):
    return SampleMeta(dataset="synthetic", video_id=f"v{i}", object_id="1", frame_id=f"{i:05d}",
                      ref_frame_id=f"{i:05d}", sentence="s", original_size=size)


def _batch(probs, targets, originals, sizes, start=0):
    b = len(probs)
    h, w = probs[0].shape
    frames = torch.zeros(b, 3, h, w)
    for i, p in enumerate(probs):
        frames[i, 0] = torch.logit(torch.as_tensor(p, dtype=torch.float32))
    return Batch(frames=frames, ref_frames=frames.clone(), word_vectors=torch.zeros(b, 5, 300),
                 word_mask=torch.ones(b, 5), metas=[_meta(start + i, s) for i, s in enumerate(sizes)],
                 masks=None if targets is None else torch.as_tensor(np.stack(targets), dtype=torch.float32),
                 original_masks=originals)


def test_resize_nearest_is_pytorch_nearest():
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    assert np.array_equal(resize_nearest(m, (4, 4)), np.kron(m, np.ones((2, 2), bool)))
    # 4 -> 3: source index floor(i * 4 / 3) = 0, 1, 2
    big = np.arange(16).reshape(4, 4) % 3 == 0
    assert np.array_equal(resize_nearest(big, (3, 3)), big[np.ix_([0, 1, 2], [0, 1, 2])])
    # 2 -> 3: floor(i * 2 / 3) = 0, 0, 1
    assert np.array_equal(resize_nearest(m, (3, 3)), m[np.ix_([0, 0, 1], [0, 0, 1])])


def test_resize_bilinear_hand_values():
    p = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    out = resize_bilinear(p, (2, 4))  # align_corners=False: x_src = (x + 0.5) / 2 - 0.5, clamped
    assert np.allclose(out, [[0, 0.25, 0.75, 1], [0, 0.25, 0.75, 1]])


def test_protocol_rules_on_a_tiny_example():
    prob = torch.tensor([[0.9, 0.2], [0.6, 0.5]])  # > 0.5 -> [[1,0],[1,0]] (0.5 itself is off)
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    original = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=bool)
    pred, gt, _ = to_original(prob, target, original, (3, 3), protocol="lbdt")
    assert np.array_equal(pred, [[1, 1, 0], [1, 1, 0], [1, 1, 0]])  # nearest rows/cols 0,0,1
    assert np.array_equal(gt, [[0, 0, 1], [0, 0, 1], [0, 0, 1]])  # model-size GT, nearest
    pred, gt, prob_full = to_original(prob, target, original, (3, 3), protocol="native")
    assert gt is original or np.array_equal(gt, original)  # native: GT at original resolution, untouched
    expected = resize_bilinear(prob.numpy(), (3, 3)) > 0.5
    assert np.array_equal(pred, expected) and np.allclose(prob_full, resize_bilinear(prob.numpy(), (3, 3)))
    # column 0 stays on, column 2 (average of 0.2 and 0.5 rows) stays off
    assert pred[:, 0].all() and not pred[:, 2].any()
    with pytest.raises(LBDTError, match="protocol"):
        to_original(prob, target, original, (3, 3), protocol="coco")


def test_predict_stream_values_and_counts():
    rng = np.random.default_rng(0)
    probs = [rng.uniform(0.05, 0.95, (4, 4)) for _ in range(7)]
    targets = [rng.random((4, 4)) > 0.5 for _ in range(7)]
    sizes = [(6, 5)] * 7
    originals = [resize_nearest(t, s) for t, s in zip(targets, sizes)]
    loader = [_batch(probs[0:3], targets[0:3], originals[0:3], sizes[0:3], 0),
              _batch(probs[3:6], targets[3:6], originals[3:6], sizes[3:6], 3),
              _batch(probs[6:7], targets[6:7], originals[6:7], sizes[6:7], 6)]  # last batch of 1: kept
    out = list(predict(ChannelLogits(), loader, protocol="lbdt", keep_prob=True))
    assert [p.meta.frame_id for p, _ in out] == [f"{i:05d}" for i in range(7)]
    for (pred, gt), p, t, s in zip(out, probs, targets, sizes):
        assert pred.mask.shape == s and pred.mask.dtype == bool
        assert np.array_equal(pred.mask, resize_nearest(p > 0.5, s))
        assert np.array_equal(gt, resize_nearest(t, s))
        assert pred.prob.shape == s
        assert pred.score == pytest.approx(float(pred.prob[pred.mask].mean()) if pred.mask.any() else 0.0)
    ev = ReferSegEvaluator()
    for pred, gt in predict(ChannelLogits(), loader, protocol="native", threshold=0.3):
        ev.update(pred, gt)
    assert ev.compute()["N"] == 7


def test_predict_without_ground_truth_and_bad_model():
    batch = _batch([np.full((2, 2), 0.8)], None, None, [(3, 3)])
    (pred, gt), = list(predict(ChannelLogits(), [batch]))
    assert gt is None and pred.mask.all() and pred.score == pytest.approx(0.8, abs=1e-6)
    (pred, gt), = list(predict(ChannelLogits(), [batch], protocol="native"))
    assert gt is None

    class Bad(nn.Module):
        def forward(self, frame, *rest):
            return frame[:, :1]

    with pytest.raises(LBDTError, match="logits"):
        list(predict(Bad(), [batch]))
    with pytest.raises(LBDTError, match="fp16"):
        list(predict(ChannelLogits(), [batch], precision="fp16"))
