"""Ref-DAVIS17: source, prepare-data, the ReferFormer 4-group protocol (hand-computed), synth and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbdt.cli import main
from lbdt.data.sources import DAVISSource
from lbdt.data.sources.davis import GROUPS
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.evaluation.davis import RefDAVISEvaluator, match_objects, merge_objects, score_video
from lbdt.tools.prepare_data import prepare_dataset
from lbdt.types import Prediction, SampleMeta

H = W = 20
FRAMES = ("00000", "00001")


def _square(r0: int, c0: int, n: int = 6) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0:r0 + n, c0:c0 + n] = True
    return m


SQ1, SQ2 = _square(2, 2), _square(12, 12)  # ground-truth objects 1 and 2, in both frames


def _png(path: Path, index: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    im.save(path)


def _davis_root(tmp_path: Path, meta: dict | None = None) -> Path:
    root = tmp_path / "refdavis"
    for f in FRAMES:
        (root / "val" / "JPEGImages" / "v").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "val" / "JPEGImages" / "v" / f"{f}.jpg")
        _png(root / "val" / "Annotations" / "v" / f"{f}.png", SQ1 * 1 + SQ2 * 2)
    if meta is None:
        exps = {}
        for group in GROUPS:
            for obj in (1, 2):
                exps[str(len(exps))] = {"exp": f"object {obj}", "obj_id": str(obj), "group": group}
        meta = {"videos": {"v": {"frames": list(FRAMES), "expressions": exps}}}
    (root / "val" / "meta_expressions.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def _prob(mask: np.ndarray, p: float) -> np.ndarray:
    return np.where(mask, p, 0.05).astype(np.float32)


def _feed(ev: RefDAVISEvaluator, source: DAVISSource, probs) -> None:
    """probs(group, obj, frame index) -> probability map; fed in record order."""
    groups = source.expression_groups("val")
    for r in source.records("val"):
        group, obj = groups[(r.video_id, r.expression_id)]
        prob = probs(group, obj, FRAMES.index(r.frame_id))
        meta = SampleMeta("davis", r.video_id, r.object_id, r.frame_id, r.frame_id, r.sentence, (H, W),
                          expression_id=r.expression_id)
        ev.update(Prediction(meta=meta, mask=prob > 0.5, prob=prob))


def test_four_group_protocol_matches_hand_computation(tmp_path):
    source = DAVISSource(_davis_root(tmp_path))
    empty = np.zeros((H, W), bool)

    def probs(group, obj, t):
        if group == "annot1_first":  # right: J = F = 1 for both objects
            return _prob(SQ1 if obj == 1 else SQ2, 0.9)
        if group == "annot1_full":  # swapped labels: the Hungarian matching undoes them -> 1
            return _prob(SQ2 if obj == 1 else SQ1, 0.9)
        if group == "annot2_first":  # object 1 below the threshold in frame 1 -> object 1: (1 + 0) / 2
            return _prob(SQ1, 0.9 if t == 0 else 0.3) if obj == 1 else _prob(SQ2, 0.9)
        # annot2_full: both on square 1, object 2 more probable -> label 2 there, label 1 nowhere:
        # gt 1 <- pred 2 (J = F = 1), gt 2 <- pred 1 (empty: 0) -> 0.5
        return _prob(SQ1, 0.6 if obj == 1 else 0.8) if t < 2 else _prob(empty, 0)

    ev = RefDAVISEvaluator(source, "val")
    _feed(ev, source, probs)
    out = ev.compute()
    expected = {"annot1_first": 1.0, "annot1_full": 1.0, "annot2_first": 0.75, "annot2_full": 0.5}
    for group, jf in expected.items():
        g = out["groups"][group]
        assert g["num_objects"] == 2
        assert g["J"] == pytest.approx(jf) and g["F"] == pytest.approx(jf) and g["J&F"] == pytest.approx(jf)
    assert out["J&F"] == pytest.approx((1 + 1 + 0.75 + 0.5) / 4)
    assert out["N"] == 2 * 4 * 2 and out["num_videos"] == 1


def test_partial_overlap_uses_frame_metrics(tmp_path):
    source = DAVISSource(_davis_root(tmp_path))
    half = SQ1.copy()
    half[:, :5] = False  # object 1 predicted on half of its square, object 2 right, in every group
    ev = RefDAVISEvaluator(source, "val")
    _feed(ev, source, lambda group, obj, t: _prob(half if obj == 1 else SQ2, 0.9))
    out = ev.compute()
    j1 = 18 / 36
    f1 = metrics.boundary_f(half, SQ1)
    assert out["J"] == pytest.approx((j1 + 1) / 2)
    assert out["F"] == pytest.approx((f1 + 1) / 2)
    assert out["J&F"] == pytest.approx(((j1 + 1) / 2 + (f1 + 1) / 2) / 2)


def test_hungarian_not_greedy():
    # mean (J+F)/2 of pred p vs gt g: greedy would take (0, 0) = 0.9 and leave gt 1 with 0.1
    score = np.array([[0.9, 0.8], [0.85, 0.1], [0.0, 0.0]])
    j = np.repeat(score[:, :, None], 3, axis=2)
    jm, _ = match_objects(j, j.copy())
    np.testing.assert_allclose(jm.mean(1), [0.85, 0.8])


def test_merge_threshold_argmax_and_ties():
    a = np.array([[0.2, 0.7, 0.6]], np.float32)
    b = np.array([[0.4, 0.9, 0.6]], np.float32)
    np.testing.assert_array_equal(merge_objects({3: a, 5: b}), [[0, 5, 3]])  # tie: the first object
    np.testing.assert_array_equal(merge_objects({3: a, 5: b}, threshold=0.65), [[0, 5, 0]])


def test_score_video_pads_missing_predictions_and_ignores_void():
    gt = np.stack([SQ1 * 1 + SQ2 * 2] * 2).astype(np.uint8)
    gt[:, 0, :] = 255  # void row (outside both squares) is ignored
    pred = np.stack([SQ1 * 1] * 2).astype(np.uint8)
    pred[:, 0, :] = 1  # predicted foreground in void pixels does not count
    j, f = score_video(pred, gt)
    np.testing.assert_allclose(j, [1.0, 0.0])
    np.testing.assert_allclose(f, [1.0, 0.0])


def test_video_order_is_required(tmp_path):
    root = _davis_root(tmp_path)
    meta = json.loads((root / "val" / "meta_expressions.json").read_text())
    meta["videos"]["w"] = meta["videos"]["v"]
    for sub in ("JPEGImages", "Annotations"):
        shutil.copytree(root / "val" / sub / "v", root / "val" / sub / "w")
    (root / "val" / "meta_expressions.json").write_text(json.dumps(meta))
    source = DAVISSource(root)
    ev = RefDAVISEvaluator(source, "val")
    recs = source.records("val")

    def pred(r):
        meta = SampleMeta("davis", r.video_id, r.object_id, r.frame_id, r.frame_id, r.sentence, (H, W),
                          expression_id=r.expression_id)
        return Prediction(meta=meta, mask=SQ1, prob=_prob(SQ1, 0.9))

    v, w = [r for r in recs if r.video_id == "v"], [r for r in recs if r.video_id == "w"]
    ev.update(pred(v[0]))
    ev.update(pred(w[0]))
    with pytest.raises(LBDTError, match="must arrive together"):
        ev.update(pred(v[1]))


@pytest.mark.parametrize("entry, message", [
    ({"exp": "a", "obj_id": "x", "group": "annot1_first"}, "expression '0'"),
    ({"exp": "a", "obj_id": "1", "group": "annot3"}, "expression '0'"),
    ({"exp": "", "obj_id": "1", "group": "annot1_first"}, "expression '0'"),
])
def test_malformed_meta_is_one_line_error(tmp_path, entry, message):
    root = _davis_root(tmp_path, {"videos": {"v": {"frames": list(FRAMES), "expressions": {"0": entry}}}})
    with pytest.raises(LBDTError) as e:
        DAVISSource(root).records("val")
    text = str(e.value)
    assert "\n" not in text and "meta_expressions.json" in text and message in text


@pytest.mark.parametrize("videos", [
    {"../v": {"frames": list(FRAMES), "expressions": {}}},
    {"v": {"frames": ["../00000"], "expressions": {}}},
    {"v": {"frames": list(FRAMES), "expressions": {"a/b": {"exp": "x", "obj_id": "1", "group": "annot1_first"}}}},
])
def test_names_must_be_plain(tmp_path, videos):
    root = _davis_root(tmp_path, {"videos": videos})
    with pytest.raises(LBDTError, match="not a plain name"):
        DAVISSource(root).records("val")


# ---------------------------------------------------------------- prepare-data davis
def _raw_release(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    davis = raw / "DAVIS"
    for vid, split in (("classic-car", "train"), ("bike", "val")):
        for f in FRAMES:
            (davis / "JPEGImages" / "480p" / vid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(davis / "JPEGImages" / "480p" / vid / f"{f}.jpg")
            _png(davis / "Annotations_unsupervised" / "480p" / vid / f"{f}.png", SQ1 * 1 + SQ2 * 2)
        sets = davis / "ImageSets" / "2017"
        sets.mkdir(parents=True, exist_ok=True)
        with open(sets / f"{split}.txt", "a") as fh:
            fh.write(vid + "\n")
    text = raw / "davis_text_annotations"
    text.mkdir()
    lines = {"Davis17_annot1.txt": ['clasic-car 1 "a red car"', 'bike 1 "a bike"', 'bike 2 "a man"',
                                    'unknown 1 "nothing"'],
             "Davis17_annot1_full_video.txt": ['classic-car 1 "red car driving"', 'bike 1 "bike moving"'],
             "Davis17_annot2.txt": ['clasic-car 1 "voiture rouge \u00e9l\u00e9gante"', 'bike 2 "the rider"'],
             "Davis17_annot2_full_video.txt": ['bike 1 "the bike"']}
    for name, content in lines.items():
        encoding = "latin-1" if "annot2" in name else "utf-8"
        (text / name).write_text("\n".join(content) + "\n", encoding=encoding)
    return raw


def test_prepare_davis_groups_renames_and_latin1(tmp_path):
    raw = _raw_release(tmp_path)
    summary = prepare_dataset("davis", raw, tmp_path / "out", show_progress=False)
    train = json.loads((tmp_path / "out" / "train" / "meta_expressions.json").read_text())["videos"]
    val = json.loads((tmp_path / "out" / "val" / "meta_expressions.json").read_text())["videos"]
    assert set(train) == {"classic-car"} and set(val) == {"bike"}
    car = sorted((e["group"], e["obj_id"], e["exp"]) for e in train["classic-car"]["expressions"].values())
    assert car == [("annot1_first", "1", "a red car"), ("annot1_full", "1", "red car driving"),
                   ("annot2_first", "1", "voiture rouge \u00e9l\u00e9gante")]
    assert len(val["bike"]["expressions"]) == 5 and val["bike"]["frames"] == list(FRAMES)
    assert any("'clasic-car' -> 'classic-car' in 2 expression lines" in n for n in summary.notes)
    assert summary.skipped["expression lines of videos not in DAVIS 2017 trainval"] == 1
    assert summary.samples == {"train/meta_expressions.json": 3 * 2, "val/meta_expressions.json": 5 * 2}
    source = DAVISSource(tmp_path / "out")
    rec = next(r for r in source.records("val") if r.sentence == "the rider")
    np.testing.assert_array_equal(source.read_mask(rec), SQ2)
    assert "renamed video 'clasic-car'" in summary.format()


def test_prepare_davis_malformed_line(tmp_path):
    raw = _raw_release(tmp_path)
    (raw / "davis_text_annotations" / "Davis17_annot1.txt").write_text('bike 1 "ok"\nbike "no id"\n')
    with pytest.raises(LBDTError) as e:
        prepare_dataset("davis", raw, tmp_path / "out", show_progress=False)
    assert "Davis17_annot1.txt:2:" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- synth + CLI
def test_synth_davis_reads_back(synth_roots):
    from conftest import TINY
    from lbdt.data.synth import benchmark_video

    source = DAVISSource(synth_roots["davis"])
    records = source.records("val")
    v = benchmark_video(TINY["seed"], "val", 0, fmt="davis", frames=TINY["frames"], size=TINY["size"])
    groups = source.expression_groups("val")
    assert {g for g, _ in groups.values()} == set(GROUPS)
    assert len(v.clip.objects) >= 2
    for r in records[: 3 * TINY["frames"]]:
        if r.video_id != v.video_id:
            continue
        obj = groups[(r.video_id, r.expression_id)][1]
        np.testing.assert_array_equal(source.read_mask(r), v.clip.masks[obj - 1, int(r.frame_id)])
    assert len(records) == TINY["videos"][1] * len(v.clip.objects) * 4 * TINY["frames"]


def test_cli_evaluate_davis_prints_four_groups(synth_roots, capsys, tmp_path):
    code = main(["evaluate", "synthetic-tiny", "--dataset", "davis", "--root", str(synth_roots["davis"]), "--split",
                 "val", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "ev")])
    assert code == 0
    text = capsys.readouterr().out
    for group in GROUPS:
        assert f"groups/{group}/J&F" in text
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    jf = report["jf"]
    assert jf["J&F"] == pytest.approx(np.mean([jf["groups"][g]["J&F"] for g in GROUPS]))
    assert 0.0 <= jf["J&F"] <= 1.0 and "ReferFormer protocol" in text
