"""engine.inference (protocol resize rules, prediction stream with a fake model) and engine.evaluate."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lbdt.cli import main
from lbdt.engine.evaluate import EvaluateSettings, evaluate, format_report
from lbdt.engine.inference import predict, resize_bilinear, resize_nearest, to_original
from lbdt.errors import LBDTError
from lbdt.evaluation.evaluators import ReferSegEvaluator
from lbdt.evaluation.submission import validate_submission
from lbdt.types import Batch, SampleMeta
from tiny_bench import write_tiny_bench


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


# ------------------------------------------------------------------ end to end: lbdt.engine.evaluate + CLI




@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Tiny synthetic benchmarks (a2d and ytvos formats) and a randomly initialised tiny checkpoint."""
    return write_tiny_bench(tmp_path_factory.mktemp("bench"), seed=0, test_videos=2)


def _records(root, fmt, split):
    from lbdt.data.sources import SOURCES

    source = SOURCES[fmt](root)
    return source, source.records(split)


def test_evaluate_counts_every_sample_and_matches_direct_metrics(bench, tmp_path):
    source, records = _records(bench / "a2d", "a2d", "test")
    n = len(records)
    assert n % 5 != 0  # a last, incomplete batch must be kept
    # threshold -1: every pixel is predicted, so IoU_i = |G_i| / (H0 W0) under the native protocol
    report = evaluate(str(bench / "tiny.pt"), EvaluateSettings(dataset="a2d", root=str(bench / "a2d"), split="test",
                      protocol="native", threshold=-1.0, batch_size=5, device="cpu", output_dir=str(tmp_path / "out"),
                      save_masks=True, progress=False))
    assert report["N"] == n and report["metrics"]["N"] == n
    areas = [int(source.read_mask(r).sum()) for r in records]
    pixels = [r.original_size[0] * r.original_size[1] for r in records]
    m = report["metrics"]
    assert m["overall_iou"] == pytest.approx(sum(areas) / sum(pixels))
    assert m["mean_iou"] == pytest.approx(np.mean([(a + 1e-6) / (p + 1e-6) for a, p in zip(areas, pixels)]))
    assert report["protocol"] == "native" and "original-resolution" in report["protocol_description"]
    assert set(m["by_group"]) == {"appearance", "motion"}
    assert sum(v["N"] for v in m["by_group"].values()) == n
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["N"] == n and saved["metrics"]["overall_iou"] == pytest.approx(m["overall_iou"])
    assert "LBDT-AP" in saved["labels"]["lbdt_ap"] and "COCO mAP" in saved["labels"]["coco_map"]
    pngs = sorted((tmp_path / "out" / "masks").rglob("*.png"))
    assert len(pngs) == n
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == tuple(records[0].original_size) and set(np.unique(first)) == {255}
    text = format_report(report)
    assert f"N = {n} samples" in text and "protocol native" in text


def test_evaluate_lbdt_protocol_and_jf(bench):
    _, records = _records(bench / "ytvos", "ytvos", "test")
    report = evaluate(str(bench / "tiny.pt"), EvaluateSettings(dataset="ytvos", root=str(bench / "ytvos"), split="test",
                      protocol="lbdt", batch_size=7, device="cpu", progress=False, coco=False))
    assert report["N"] == len(records) == report["jf"]["N"]
    assert "coco_map" not in report["metrics"]
    assert 0.0 <= report["jf"]["J&F"] <= 1.0


def test_evaluate_ytvos_valid_writes_a_valid_submission(bench, tmp_path):
    _, records = _records(bench / "ytvos", "ytvos", "valid")
    out = tmp_path / "sub"
    report = evaluate(str(bench / "tiny.pt"), EvaluateSettings(dataset="ytvos", root=str(bench / "ytvos"), split="valid",
                      batch_size=6, device="cpu", output_dir=str(out), progress=False))
    assert report["N"] == len(records) and "metrics" not in report
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert len(z.namelist()) == len(records)
    # the server's meta lists only the valid videos: keep the synthetic test split's videos
    meta = json.loads((bench / "ytvos" / "meta_expressions.json").read_text())
    valid_videos = {r.video_id for r in records}
    meta["videos"] = {v: e for v, e in meta["videos"].items() if v in valid_videos}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert validate_submission(out / "submission.zip", tmp_path / "meta.json") == []
    assert main(["validate-submission", str(out / "submission.zip"), "--meta", str(tmp_path / "meta.json")]) == 0
    with zipfile.ZipFile(out / "submission.zip", "a") as z:
        z.writestr("Annotations/extra.png", b"")
    assert main(["validate-submission", str(out / "submission.zip"), "--meta", str(tmp_path / "meta.json")]) == 1


def test_evaluate_cli(bench, tmp_path, capsys):
    rc = main(["evaluate", str(bench / "tiny.pt"), "--dataset", "a2d", "--root", str(bench / "a2d"), "--split", "test",
               "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path), "--limit", "5", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "N = 5 samples, protocol lbdt" in printed and "LBDT-AP" in printed
    assert json.loads((tmp_path / "metrics.json").read_text())["N"] == 5
    assert main(["evaluate", str(bench / "tiny.pt"), "--dataset", "a2d", "--root", str(tmp_path / "missing"),
                 "--split", "test"]) == 2
