"""Long-RVOS: tIoU / vIoU by hand, the source (absent = no mask file, 0/255, types), the organisers' per-type
and overall means by hand, prepare-data and synth longrvos, `lbdt evaluate` end to end against an independent
computation from the saved masks, and two gloo processes equal to one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from lbdt.cli import main
from lbdt.data.sources import LongRVOSSource
from lbdt.data.synth import benchmark_video, write_benchmark
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.evaluation.evaluators import JFEvaluator
from lbdt.evaluation.longrvos import LongRVOSEvaluator
from lbdt.tools.prepare_data import prepare_dataset
from lbdt.types import Prediction, SampleMeta

H = W = 16
FRAMES = ["00000", "00001", "00002", "00003"]
A = np.zeros((H, W), bool)
A[2:5, 2:5] = True  # object 1: in frames 0, 1, 3 (no mask file for frame 2)
B = np.zeros((H, W), bool)
B[9:13, 9:13] = True  # object 2: in every frame
E = np.zeros((H, W), bool)
EXPRESSIONS = {  # static twice (one never-present target), dynamic once, hybrid once
    "0": {"exp": "the small square", "obj_id": "1", "type": "static"},
    "1": {"exp": "the square moving down", "obj_id": 2, "type": "dynamic"},
    "2": {"exp": "the small square moving left", "obj_id": "1", "type": "static+dynamic"},
    "3": {"exp": "the dog that never shows", "obj_id": "3", "type": "static"},
}


def _png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _root(tmp_path: Path, *, expressions: dict | None = None, split: str = "valid") -> Path:
    root = tmp_path / "longrvos"
    d = root / split
    (d / "JPEGImages" / "v").mkdir(parents=True)
    for f in FRAMES:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / "JPEGImages" / "v" / f"{f}.jpg")
    for f in ("00000", "00001", "00003"):
        _png(d / "Annotations" / "v" / "1" / f"{f}.png", A)
    for f in FRAMES:
        _png(d / "Annotations" / "v" / "2" / f"{f}.png", B)
    (d / "Annotations" / "v" / "3").mkdir()  # the object is never in the video: an empty folder
    meta = {"videos": {"v": {"frames": FRAMES, "expressions": expressions or EXPRESSIONS}}}
    (d / "meta_expressions.json").write_text(json.dumps(meta))
    return root


def _pred(exp: str, frame: str, mask: np.ndarray) -> Prediction:
    return Prediction(meta=SampleMeta("longrvos", "v", exp, frame, frame, "s", (H, W), expression_id=exp), mask=mask)


# ---------------------------------------------------------------- tIoU / vIoU by hand


@pytest.mark.parametrize("pred, gt, j, tiou, viou", [
    # absent frames: truth in frames 0, 1, 3; prediction in 0, 3 -> both 2, either 3; J 0.5 and 0.25 on the shared
    ([1, 0, 0, 1], [1, 1, 0, 1], [0.5, 0, 1, 0.25], 2 / 3, (0.5 + 0.25) / 3),
    ([0, 0, 0], [0, 0, 0], [1, 1, 1], 1.0, 1.0),  # both empty everywhere (never-present target, nothing predicted)
    ([0, 1, 1], [0, 0, 0], [1, 0, 0], 0.0, 0.0),  # never-present target, predicted twice
    ([1, 1, 0], [0, 0, 0], [0, 0, 1], 0.0, 0.0),  # prediction only
    ([0, 0, 0], [1, 0, 1], [0, 1, 0], 0.0, 0.0),  # ground truth only
    ([1, 1], [1, 1], [0.8, 0.6], 1.0, 0.7),  # always both present: vIoU = mean J
    ([1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0, 0, 1], 1 / 3, 0.9 / 3),  # one shared, one prediction-only, one truth-only
])
def test_tiou_viou_by_hand(pred, gt, j, tiou, viou):
    assert metrics.temporal_iou(pred, gt) == pytest.approx(tiou)
    assert metrics.volume_iou(pred, gt, j) == pytest.approx(viou)


def test_tiou_viou_reject_mismatched_lengths():
    with pytest.raises(LBDTError, match="differ in length"):
        metrics.temporal_iou([1, 0], [1])
    with pytest.raises(LBDTError, match="differ in length"):
        metrics.volume_iou([1, 0], [1, 1], [1.0])
    with pytest.raises(LBDTError, match="zero expressions"):
        metrics.temporal_per_expression({})


def test_temporal_per_expression_means_over_expressions():
    out = metrics.temporal_per_expression({"a": [(0.5, True, True), (1.0, False, False)],  # 1, 0.5
                                           "b": [(0.0, True, False), (0.0, False, True)]})  # 0, 0
    assert out == {"tIoU": pytest.approx(0.5), "vIoU": pytest.approx(0.25)}


def test_jf_evaluator_reports_tiou_viou_and_keeps_no_masks():
    """Ref-YTVOS / MeViS J&F get tIoU / vIoU too; per frame only scalars are kept (flat in video length)."""
    ev = JFEvaluator()
    for f, (p, g) in zip(FRAMES, [(A, A), (E, A), (A, E), (E, E)]):
        ev.update(Prediction(meta=SampleMeta("ytvos", "v", "1", f, f, "s", (H, W)), mask=p), g)
    out = ev.compute()
    assert out["tIoU"] == pytest.approx(1 / 3) and out["vIoU"] == pytest.approx(1 / 3)  # either in 0..2, both in 0
    big = np.zeros((256, 256), bool)
    big[10:200, 10:200] = True
    tracemalloc.start()
    ev = LongRVOSEvaluator({"v/0": "static"})
    for t in range(300):
        ev.update(_pred("0", f"{t:05d}", big), big)
        if t == 49:
            after_50 = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - after_50
    tracemalloc.stop()
    assert grown < 250 * 1000  # 250 more frames: well under 1 kB each (one mask is 64 kB)


# ---------------------------------------------------------------- source


def test_source_reads_the_released_layout(tmp_path):
    source = LongRVOSSource(_root(tmp_path))
    records = source.records("valid")
    assert len(records) == 16 and source.has_masks("valid")
    assert {r.expression_id: r.category for r in records} == {"0": "static", "1": "dynamic", "2": "hybrid", "3": "static"}
    assert source.expression_types("valid") == {"v/0": "static", "v/1": "dynamic", "v/2": "hybrid", "v/3": "static"}
    masks = {(r.expression_id, r.frame_id): source.read_mask(r) for r in records}
    for exp, obj in (("0", A), ("2", A)):
        for f in FRAMES:
            np.testing.assert_array_equal(masks[(exp, f)], E if f == "00002" else obj)  # no file = absent = empty
    for f in FRAMES:
        np.testing.assert_array_equal(masks[("1", f)], B)
        np.testing.assert_array_equal(masks[("3", f)], E)
    # frame-major order: a frame's expressions follow each other (a batch shares the frame's trunk)
    assert [(r.frame_id, r.expression_id) for r in records[:5]] == [("00000", e) for e in "0123"] + [("00001", "0")]
    assert source.mask_path(records[1]) == source.root / "valid" / "Annotations" / "v" / "2" / "00000.png"
    assert source.reference_frame_id("v", "00002") == "00001" and source.reference_frame_id("v", "00000") == "00000"


@pytest.mark.parametrize("entry, needle", [
    ({"exp": "x", "obj_id": "1", "type": "moving"}, "'type' must be one of static, dynamic, static+dynamic"),
    ({"exp": "x", "obj_id": "../1", "type": "static"}, "expected 'obj_id': an object number"),
    ({"exp": "x", "obj_id": True, "type": "static"}, "expected 'obj_id'"),
    ({"exp": "x", "type": "static"}, "expected 'obj_id'"),
    ({"obj_id": "1", "type": "static"}, "non-empty text"),
])
def test_malformed_meta_is_one_line_error(tmp_path, entry, needle):
    source = LongRVOSSource(_root(tmp_path, expressions={"0": entry}))
    with pytest.raises(LBDTError) as e:
        source.records("valid")
    assert "meta_expressions.json" in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


def test_bad_masks_are_one_line_errors(tmp_path):
    root = _root(tmp_path)
    ann = root / "valid" / "Annotations" / "v"
    Image.fromarray(np.where(A, 1, 0).astype(np.uint8)).save(ann / "1" / "00000.png")  # an index mask, not 0/255
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(ann / "2" / "00000.png")  # RGB
    (ann / "2" / "00001.png").write_bytes(b"not a png")
    (ann / "3").rmdir()  # the object's folder is missing altogether
    source = LongRVOSSource(root)
    by_key = {(r.expression_id, r.frame_id): r for r in source.records("valid")}
    for key, needle in [(("0", "00000"), "expected mask values 0 and 255, found [0, 1]"),
                        (("1", "00000"), "single-channel"), (("1", "00001"), "unreadable mask PNG"),
                        (("3", "00000"), "mask folder of the object")]:
        with pytest.raises(LBDTError) as e:
            source.read_mask(by_key[key])
        assert needle in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the organisers' means by hand


def test_metric_by_hand(tmp_path):
    source = LongRVOSSource(_root(tmp_path))
    truth = {(r.expression_id, r.frame_id): source.read_mask(r) for r in source.records("valid")}
    preds = {
        "0": [A, E, E, A | B],  # J 1, 0, 1 (both empty), 9/25; present in 0, 3 of truth's 0, 1, 3
        "1": [B, B, B, B],  # perfect
        "2": [E, E, A, E],  # predicted only where the object is absent, missed where it is there
        "3": [E, E, E, E],  # never-present target, nothing predicted: 1 everywhere
    }
    ev = LongRVOSEvaluator(source.expression_types("valid"))
    for exp, masks in preds.items():
        for f, m in zip(FRAMES, masks):
            ev.update(_pred(exp, f, m), truth[(exp, f)])
    out = ev.compute()
    j = {"0": (1 + 0 + 1 + 9 / 25) / 4, "1": 1.0, "2": 0.0, "3": 1.0}
    f = {"0": (1 + 0 + 1 + metrics.boundary_f(A | B, A)) / 4, "1": 1.0, "2": 0.0, "3": 1.0}
    t = {"0": 2 / 3, "1": 1.0, "2": 0.0, "3": 1.0}
    v = {"0": (1 + 9 / 25) / 3, "1": 1.0, "2": 0.0, "3": 1.0}
    for name, per in (("J", j), ("F", f), ("tIoU", t), ("vIoU", v)):
        assert out[name] == pytest.approx(np.mean(list(per.values())))  # pooled over all 4 expressions
        assert out["static"][name] == pytest.approx((per["0"] + per["3"]) / 2)
        assert out["dynamic"][name] == pytest.approx(per["1"])
        assert out["hybrid"][name] == pytest.approx(per["2"])
    assert out["J&F"] == pytest.approx((out["J"] + out["F"]) / 2)
    assert out["static"]["J&F"] == pytest.approx((out["static"]["J"] + out["static"]["F"]) / 2)
    # the overall number pools expressions: it is not the mean of the three types' means
    assert out["J"] != pytest.approx(np.mean([out[k]["J"] for k in ("static", "dynamic", "hybrid")]))
    assert out["N"] == 16 and out["num_expressions"] == 4 and out["static"]["num_expressions"] == 2


def test_an_expression_without_a_type_cannot_be_scored(tmp_path):
    exps = {"0": {"exp": "the small square", "obj_id": "1"}}
    source = LongRVOSSource(_root(tmp_path, expressions=exps))
    assert source.records("valid")[0].category == ""  # reading (training) works without a type
    ev = LongRVOSEvaluator(source.expression_types("valid"), where="m.json")
    with pytest.raises(LBDTError, match="m.json: expression 'v/0' has no 'type'"):
        ev.update(_pred("0", "00000", A), A)


# ---------------------------------------------------------------- synth and prepare-data


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "lr"
    assert main(["synth", "--format", "longrvos", "--out", str(root), "--videos", "1", "2", "1", "--frames", "8",
                 "--no-progress"]) == 0
    return root


def test_synth_writes_the_released_layout(synthetic):
    for split, n in (("train", 1), ("valid", 2), ("test", 1)):
        videos = json.loads((synthetic / split / "meta_expressions.json").read_text())["videos"]
        assert len(videos) == n
        types = [e["type"] for v in videos.values() for e in v["expressions"].values()]
        assert set(types) == {"static", "dynamic", "static+dynamic"}
    vid = "syn_val_0001"
    v = benchmark_video(0, "val", 1, fmt="longrvos", frames=8)
    folder = synthetic / "valid" / "Annotations" / vid
    absent = 0
    for o in range(len(v.clip.objects)):
        for t, name in enumerate(v.frame_names):
            png = folder / str(o + 1) / f"{name}.png"
            assert png.is_file() == bool(v.clip.masks[o, t].any())
            absent += not png.is_file()
            if png.is_file():
                values = np.asarray(Image.open(png))
                assert set(np.unique(values)) <= {0, 255}
                np.testing.assert_array_equal(values == 255, v.clip.masks[o, t])
    assert absent >= 4  # object 4 in the first third, object 1 in the middle third


def test_prepare_data_checks_and_links(synthetic, tmp_path):
    raw = tmp_path / "raw"
    write_benchmark(raw, fmt="longrvos", seed=3, videos=(1, 1, 0), frames=6, progress=False)
    shutil.rmtree(raw / "test")
    _png(raw / "valid" / "Annotations" / "syn_val_0000" / "1" / "99999.png", A)  # a frame the meta does not list
    summary = prepare_dataset("longrvos", raw, tmp_path / "out", show_progress=False)
    assert summary.videos == {"train": 1, "valid": 1} and summary.skipped
    assert "valid: expressions by type: dynamic 2, hybrid 2, static 2" in summary.notes
    assert any("test" in w for w in summary.warnings)
    src, out = LongRVOSSource(raw), LongRVOSSource(tmp_path / "out")
    for a, b in zip(src.records("valid"), out.records("valid")):
        np.testing.assert_array_equal(src.read_mask(a), out.read_mask(b))
    assert not (tmp_path / "out" / "valid" / "Annotations" / "syn_val_0000" / "1" / "99999.png").exists()
    (raw / "valid" / "JPEGImages" / "syn_val_0000" / "00002.jpg").unlink()
    with pytest.raises(LBDTError, match="00002.jpg: frame listed in .* not found"):
        prepare_dataset("longrvos", raw, tmp_path / "out2", show_progress=False)


def test_prepare_data_refuses_names_that_leave_out(tmp_path):
    raw = tmp_path / "raw"
    write_benchmark(raw, fmt="longrvos", seed=3, videos=(0, 1, 0), frames=4, progress=False)
    meta_path = raw / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["../../escape"] = meta["videos"].pop("syn_val_0000")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(LBDTError, match="not a plain name"):
        prepare_dataset("longrvos", raw, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "valid").exists()


# ---------------------------------------------------------------- lbdt evaluate end to end


def _independent_scores(root: Path, masks: Path) -> dict:
    """The organisers' numbers recomputed from the saved PNGs and the Annotations folder (numpy, not lbdt's evaluator)."""
    meta = json.loads((root / "valid" / "meta_expressions.json").read_text())["videos"]
    per = {}
    for vid, v in meta.items():
        for eid, e in v["expressions"].items():
            j, f, p_any, g_any = [], [], [], []
            for name in v["frames"]:
                pred = np.asarray(Image.open(masks / vid / eid / f"{name}.png")) != 0
                gt_path = root / "valid" / "Annotations" / vid / e["obj_id"] / f"{name}.png"
                gt = np.asarray(Image.open(gt_path)) != 0 if gt_path.is_file() else np.zeros_like(pred)
                union = np.count_nonzero(pred | gt)
                j.append(1.0 if union == 0 else np.count_nonzero(pred & gt) / union)
                f.append(metrics.boundary_f(pred, gt))
                p_any.append(pred.any())
                g_any.append(gt.any())
            p_any, g_any, j = np.array(p_any), np.array(g_any), np.array(j)
            either = np.count_nonzero(p_any | g_any)
            both = p_any & g_any
            per[(vid, eid)] = (e["type"], np.mean(j), np.mean(f), 1.0 if either == 0 else both.sum() / either,
                               1.0 if either == 0 else j[both].sum() / either)
    out = {}
    for name, kinds in (("all", ("static", "dynamic", "static+dynamic")), ("static", ("static",)),
                        ("dynamic", ("dynamic",)), ("hybrid", ("static+dynamic",))):
        rows = np.array([s[1:] for s in per.values() if s[0] in kinds])
        jm, fm, tm, vm = rows.mean(axis=0)
        out[name] = {"J": jm, "F": fm, "J&F": (jm + fm) / 2, "tIoU": tm, "vIoU": vm}
    return out


@pytest.fixture(scope="module")
def evaluated(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["evaluate", "synthetic-tiny", "--dataset", "longrvos", "--root", str(synthetic), "--split", "valid",
                 "--save-masks", "--out", str(out), "--precision", "fp32", "--device", "cpu", "--no-progress"]) == 0
    return out


def test_evaluate_end_to_end_matches_an_independent_computation(synthetic, evaluated):
    report = json.loads((evaluated / "metrics.json").read_text())
    expect = _independent_scores(synthetic, evaluated / "masks")
    for k in ("J", "F", "J&F", "tIoU", "vIoU"):
        assert report[k] == pytest.approx(expect["all"][k], abs=1e-12)
        for kind in ("static", "dynamic", "hybrid"):
            assert report[kind][k] == pytest.approx(expect[kind][k], abs=1e-12)
            assert report["jf"][kind][k] == report[kind][k]
    assert report["N"] == 2 * 6 * 8 and report["protocol"] == "native" and report["dataset"] == "longrvos"
    assert 0 < report["tIoU"] < 1 and 0 < report["vIoU"] < report["tIoU"]  # real masks: some frames right, some not
    pngs = sorted(p.relative_to(evaluated / "masks").as_posix() for p in (evaluated / "masks").rglob("*.png"))
    assert len(pngs) == report["N"] and pngs[0] == "syn_val_0000/0/00000.png"  # <video>/<expression id>/<frame>.png


# ---------------------------------------------------------------- two gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    import torch

    torch.set_num_threads(1)
    from lbdt.engine.evaluate import EvaluateSettings, evaluate

    report = evaluate("synthetic-tiny", EvaluateSettings(dataset="longrvos", root=root, split="valid", device="cpu",
                                                         precision="fp32", output_dir=out, save_masks=True,
                                                         progress=False))
    dist.destroy_process_group()
    Path(f"{out}-rank{rank}.json").write_text(json.dumps(report))


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("world_size", "outputs")}


def test_two_processes_equal_one(synthetic, evaluated, tmp_path):
    out = tmp_path / "two"
    mp.start_processes(_worker, args=(2, _free_port(), str(synthetic), str(out)), nprocs=2, join=True,
                       start_method="spawn")
    one = json.loads((evaluated / "metrics.json").read_text())
    two = json.loads((out / "metrics.json").read_text())
    assert _strip(two) == _strip(one) and two["world_size"] == 2 and one["world_size"] == 1
    for rank in range(2):
        assert _strip(json.loads(Path(f"{out}-rank{rank}.json").read_text())) == _strip(two)
    files = sorted(p.relative_to(evaluated / "masks") for p in (evaluated / "masks").rglob("*.png"))
    assert files == sorted(p.relative_to(out / "masks") for p in (out / "masks").rglob("*.png"))
    for rel in files:
        assert (evaluated / "masks" / rel).read_bytes() == (out / "masks" / rel).read_bytes()
