"""MeViS: source (union targets, absent frames, no-target expressions), the organisers' metric by hand,
the server zip and its validation, prepare-data mevis, synth and the CLI."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbdt.cli import main
from lbdt.data.sources import MeViSSource
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.evaluation.mevis import MeViSEvaluator
from lbdt.evaluation.submission import validate_submission
from lbdt.evaluation.writers import SubmissionWriter
from lbdt.tools.prepare_data import prepare_dataset
from lbdt.types import Prediction, SampleMeta

H = W = 16
FRAMES = ["00000", "00001", "00002"]
A = np.zeros((H, W), bool)
A[2:5, 2:5] = True  # object of anno 0: present in frames 0 and 1, absent in frame 2
B = np.zeros((H, W), bool)
B[9:13, 9:13] = True  # object of anno 1: present in every frame
EMPTY = np.zeros((H, W), bool)


def _rle(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def _mevis_root(tmp_path: Path, *, meta: dict | None = None, masks: dict | None = None, split="valid_u") -> Path:
    root = tmp_path / "mevis"
    d = root / split
    (d / "JPEGImages" / "v").mkdir(parents=True)
    for f in FRAMES:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / "JPEGImages" / "v" / f"{f}.jpg")
    meta = meta or {"videos": {"v": {"frames": FRAMES, "expressions": {
        "0": {"exp": "the small one", "obj_id": [0], "anno_id": [0]},
        "1": {"exp": "both of them", "obj_id": [0, 1], "anno_id": [0, 1]},
        "2": {"exp": "the flying car", "obj_id": [], "anno_id": []}}}}}
    (d / "meta_expressions.json").write_text(json.dumps(meta))
    if split != "valid":
        masks = masks if masks is not None else {"0": [_rle(A), _rle(A), None], "1": [_rle(B)] * 3}
        (d / "mask_dict.json").write_text(json.dumps(masks))
    return root


def _pred(exp: str, frame: str, mask: np.ndarray) -> Prediction:
    return Prediction(meta=SampleMeta("mevis", "v", exp, frame, frame, "s", (H, W), expression_id=exp), mask=mask)


def test_source_union_absent_and_no_target(tmp_path):
    source = MeViSSource(_mevis_root(tmp_path))
    recs = source.records("valid_u")
    assert [(r.expression_id, r.frame_id) for r in recs] == [(e, f) for e in "012" for f in FRAMES]
    masks = {(r.expression_id, r.frame_id): source.read_mask(r) for r in recs}
    np.testing.assert_array_equal(masks[("0", "00000")], A)
    np.testing.assert_array_equal(masks[("0", "00002")], EMPTY)  # absent: null RLE
    np.testing.assert_array_equal(masks[("1", "00001")], A | B)  # union of the anno_ids
    np.testing.assert_array_equal(masks[("1", "00002")], B)
    for f in FRAMES:
        np.testing.assert_array_equal(masks[("2", f)], EMPTY)
    assert source.no_target_keys("valid_u") == {"v/2"}
    assert source.has_masks("valid_u")


def test_metric_by_hand(tmp_path):
    source = MeViSSource(_mevis_root(tmp_path))
    truth = {(r.expression_id, r.frame_id): source.read_mask(r) for r in source.records("valid_u")}
    preds = {
        # expression 0: right, right, empty on the empty (absent) frame -> J = F = 1
        "0": [A, A, EMPTY],
        # expression 1 (union): only B in frame 0, right in frame 1, empty while B is there in frame 2
        "1": [B, A | B, EMPTY],
        # no-target: empty, empty, something -> 1, 1, 0
        "2": [EMPTY, EMPTY, A],
    }
    ev = MeViSEvaluator(no_target=source.no_target_keys("valid_u"))
    for exp, masks in preds.items():
        for f, m in zip(FRAMES, masks):
            ev.update(_pred(exp, f, m), truth[(exp, f)])
    out = ev.compute()
    j1 = (16 / (9 + 16) + 1 + 0) / 3
    f1 = (metrics.boundary_f(B, A | B) + 1 + 0) / 3
    j = {"0": 1.0, "1": j1, "2": 2 / 3}
    f = {"0": 1.0, "1": f1, "2": 2 / 3}
    assert out["J"] == pytest.approx(np.mean(list(j.values())))
    assert out["F"] == pytest.approx(np.mean(list(f.values())))
    assert out["J&F"] == pytest.approx((out["J"] + out["F"]) / 2)
    assert out["num_expressions"] == 3 and out["N"] == 9
    assert out["target"]["J"] == pytest.approx((1 + j1) / 2) and out["target"]["num_expressions"] == 2
    assert out["no_target"] == {"J": pytest.approx(2 / 3), "F": pytest.approx(2 / 3), "J&F": pytest.approx(2 / 3),
                                "num_expressions": 1}


@pytest.mark.parametrize("masks, needle", [
    ({"0": [None, None], "1": [None] * 3}, "anno_id '0': expected a list of 3 entries"),
    ({"1": [None] * 3}, "anno_id '0': expected a list of 3 entries"),
    ({"0": [{"size": [H, W], "counts": 7}, None, None], "1": [None] * 3}, "anno_id '0', frame 0: not a COCO RLE"),
    ({"0": ["x", None, None], "1": [None] * 3}, "anno_id '0', frame 0: expected a COCO RLE object or null"),
])
def test_malformed_mask_dict_is_one_line_error(tmp_path, masks, needle):
    source = MeViSSource(_mevis_root(tmp_path, masks=masks))
    with pytest.raises(LBDTError) as e:
        for r in source.records("valid_u"):
            source.read_mask(r)
    assert "mask_dict.json" in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("videos, needle", [
    ({"v": {"frames": FRAMES, "expressions": {"0": {"exp": "x", "obj_id": [0], "anno_id": "0"}}}}, "expression '0'"),
    ({"v": {"frames": FRAMES, "expressions": {"0": {"exp": "x", "obj_id": [0], "anno_id": ["a"]}}}}, "expression '0'"),
    ({"v": {"frames": FRAMES, "expressions": {"0": {"obj_id": [0], "anno_id": [0]}}}}, "expression '0'"),
    ({"v": {"frames": "00000", "expressions": {}}}, "video 'v'"),
    ({"/abs": {"frames": FRAMES, "expressions": {}}}, "not a plain name"),
    ({"v": {"frames": ["..", "00001"], "expressions": {}}}, "not a plain name"),
])
def test_malformed_meta_is_one_line_error(tmp_path, videos, needle):
    source = MeViSSource(_mevis_root(tmp_path, meta={"videos": videos}))
    with pytest.raises(LBDTError) as e:
        source.records("valid_u")
    assert "meta_expressions.json" in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


def test_missing_mask_dict_is_reported(tmp_path):
    source = MeViSSource(_mevis_root(tmp_path, split="valid"))
    assert not source.has_masks("valid")
    with pytest.raises(LBDTError, match="mask_dict.json"):
        source.mask_dict("valid")


def test_submission_zip_round_trip_and_broken_zip(tmp_path):
    root = _mevis_root(tmp_path, split="valid")
    meta = root / "valid" / "meta_expressions.json"
    writer = SubmissionWriter(zip_path=tmp_path / "sub.zip", top="")
    for exp in "012":
        for f in FRAMES:
            writer.write(_pred(exp, f, A))
    writer.close()
    names = set(zipfile.ZipFile(tmp_path / "sub.zip").namelist())
    assert names == {f"v/{e}/{f}.png" for e in "012" for f in FRAMES}  # video folders at the top level
    assert validate_submission(tmp_path / "sub.zip", meta, fmt="mevis") == []
    assert main(["validate-submission", str(tmp_path / "sub.zip"), "--meta", str(meta), "--format", "mevis"]) == 0
    # the Ref-YouTube-VOS layout (Annotations/...) is wrong for MeViS, and a missing frame is reported
    with zipfile.ZipFile(tmp_path / "sub.zip") as src, zipfile.ZipFile(tmp_path / "bad.zip", "w") as dst:
        for name in sorted(names)[1:]:
            dst.writestr(f"Annotations/{name}" if name.startswith("v/2/") else name, src.read(name))
    problems = validate_submission(tmp_path / "bad.zip", meta, fmt="mevis")
    assert f"missing: {min(names)}" in problems
    assert "extra file: Annotations/v/2/00000.png (the video folders must be at the zip's top level)" in problems
    assert main(["validate-submission", str(tmp_path / "bad.zip"), "--meta", str(meta), "--format", "mevis"]) == 1


def test_prepare_mevis_checks_and_links(synth_roots, tmp_path):
    out = tmp_path / "linked"
    summary = prepare_dataset("mevis", synth_roots["mevis"], out, show_progress=False)
    assert set(summary.videos) == {"train", "valid_u", "valid"}
    assert (out / "valid_u" / "mask_dict.json").is_file() and not (out / "valid" / "mask_dict.json").exists()
    assert len(MeViSSource(out).records("valid_u")) == summary.samples["valid_u/meta_expressions.json"]
    broken = tmp_path / "broken"
    shutil.copytree(synth_roots["mevis"], broken)
    next((broken / "train" / "JPEGImages").glob("*/00003.jpg")).unlink()
    with pytest.raises(LBDTError, match="00003.jpg: frame listed in"):
        prepare_dataset("mevis", broken, tmp_path / "out2", show_progress=False)


def test_synth_mevis_union_absent_and_no_target(synth_roots):
    from conftest import TINY
    from lbdt.data.synth import benchmark_video

    source = MeViSSource(synth_roots["mevis"])
    v = benchmark_video(TINY["seed"], "val", 0, fmt="mevis", frames=TINY["frames"], size=TINY["size"])
    exps = source.videos("valid_u")[v.video_id]["expressions"]
    kinds = {e["type"]: eid for eid, e in exps.items() if e["type"] in ("union", "no-target")}
    a, b = (o for o, ob in enumerate(v.clip.objects) if ob.sentence_type == "motion")
    for t, f in enumerate(v.frame_names):
        np.testing.assert_array_equal(source.target(v.video_id, kinds["union"], f), v.clip.masks[a, t] | v.clip.masks[b, t])
        assert not source.target(v.video_id, kinds["no-target"], f).any()
    last = next(eid for eid, e in exps.items() if e["obj_id"] == [3])
    absent = [f for f in v.frame_names if not source.target(v.video_id, last, f).any()]
    assert absent == v.frame_names[: TINY["frames"] // 3]


def test_cli_evaluate_mevis_valid_u_and_valid_zip(synth_roots, capsys, tmp_path):
    root = str(synth_roots["mevis"])
    assert main(["evaluate", "synthetic-tiny", "--dataset", "mevis", "--root", root, "--split", "valid_u",
                 "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for key in ("J ", "F ", "J&F ", "no_target/J&F"):
        assert any(line.startswith(key) for line in text.splitlines()), key
    assert main(["evaluate", "synthetic-tiny", "--dataset", "mevis", "--root", root, "--split", "valid",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    assert "submission" in capsys.readouterr().out
    meta = synth_roots["mevis"] / "valid" / "meta_expressions.json"
    assert validate_submission(tmp_path / "ev" / "submission.zip", meta, fmt="mevis") == []
