"""`lbdt prepare-data` on tiny fake official releases (tests/fake_releases.py)."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

import lbdt.tools.prepare_data.a2d as a2d_mod
import lbdt.tools.prepare_data.jhmdb as jhmdb_mod
from fake_releases import (
    A2D_SENTENCES,
    A2D_SIZE,
    JHMDB_SIZE,
    JHMDB_VIDEOS,
    YTVOS_EXPRESSIONS,
    YTVOS_FRAMES,
    YTVOS_SIZE,
    box_mask,
    frame_colour,
    make_a2d,
    make_jhmdb,
    make_ytvos,
    ytvos_index_map,
)
from lbdt.cli import main
from lbdt.data.listfile import read_list
from lbdt.data.sources import SOURCES
from lbdt.errors import LBDTError
from lbdt.tools.prepare_data import prepare_dataset
from lbdt.tools.prepare_data.jhmdb import choose_frames
from lbdt.tools.prepare_data.ytvos import held_out_videos


def _fields(records):
    return sorted((r.video_id, r.frame_id, r.object_id, r.sentence, r.original_size, r.category) for r in records)


def _mean_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float64).reshape(-1, 3).mean(0)


@pytest.fixture(scope="module")
def a2d_raw(tmp_path_factory):
    return make_a2d(tmp_path_factory.mktemp("a2d_raw"))


@pytest.fixture(scope="module")
def a2d_out(a2d_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("a2d_out")
    summary = prepare_dataset("a2d", a2d_raw, out, show_progress=False)
    return out, summary


# ------------------------------------------------------------------------------------------------ A2D
def test_a2d_frames_decoded_in_order_with_one_based_names(a2d_out):
    out, _ = a2d_out
    for i, vid in enumerate(["vidA", "vidB"]):
        names = sorted(p.name for p in (out / "images" / vid).iterdir())
        assert names == [f"{k:05d}.jpg" for k in range(1, 13)]
        for k in (1, 6, 7, 12):
            mean = _mean_rgb(out / "images" / vid / f"{k:05d}.jpg")
            assert np.abs(mean - frame_colour(k, i)).max() < 8, (vid, k, mean)  # neighbours differ by 20
    assert not (out / "images" / "vidMissed").exists() and not (out / "images" / "vidNoClip").exists()


def test_a2d_masks_linked_and_lists_as_expected(a2d_raw, a2d_out):
    out, summary = a2d_out
    src = a2d_raw / "text_annotations" / "a2d_annotation_with_instances" / "vidB" / "00009.h5"
    dst = out / "masks" / "vidB" / "00009.h5"
    assert os.path.samefile(src, dst)  # hard link by default
    with h5py.File(dst, "r") as f:
        assert f["reMask"].shape == (2, A2D_SIZE[1], A2D_SIZE[0])
    size = A2D_SIZE
    assert _fields(read_list(out / "train.txt", "comma6")) == [
        ("vidA", "00007", "1", A2D_SENTENCES["vidA", 1], size, "adult-climbing"),
        ("vidA", "00012", "1", A2D_SENTENCES["vidA", 1], size, "adult-climbing"),
    ]
    assert _fields(read_list(out / "val.txt", "comma6")) == [
        ("vidB", "00005", "2", A2D_SENTENCES["vidB", 2], size, "adult-walking"),
        ("vidB", "00009", "1", A2D_SENTENCES["vidB", 1], size, "ball-rolling"),
        ("vidB", "00009", "2", A2D_SENTENCES["vidB", 2], size, "adult-walking"),
    ]
    assert summary.samples == {"train.txt": 2, "val.txt": 3}
    assert summary.videos == {"train": 1, "val": 1}
    assert summary.skipped == {"videos listed in a2d_missed_videos.txt": 1,
                               "videos without a clip in Release/clips320H": 1,
                               "annotation rows with a non-integer instance id": 1}
    assert "2 samples" in summary.format() and "1 × videos listed in a2d_missed_videos.txt" in summary.format()


def test_a2d_second_run_reuses_frames_without_decoding(a2d_raw, a2d_out, monkeypatch):
    out, _ = a2d_out
    jpgs = sorted((out / "images").rglob("*.jpg"))
    mtimes = [p.stat().st_mtime_ns for p in jpgs]
    before = (out / "train.txt").read_text(), (out / "val.txt").read_text()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished video was decoded again")

    monkeypatch.setattr(a2d_mod, "extract_frames", no_decoding)
    summary = prepare_dataset("a2d", a2d_raw, out, show_progress=False)
    assert summary.reused == 2
    assert [p.stat().st_mtime_ns for p in jpgs] == mtimes
    assert ((out / "train.txt").read_text(), (out / "val.txt").read_text()) == before


def test_a2d_interrupted_video_is_redone(a2d_raw, tmp_path):
    out = tmp_path / "out"
    prepare_dataset("a2d", a2d_raw, out, show_progress=False, copy=True)
    assert not os.path.samefile(a2d_raw / "text_annotations" / "a2d_annotation_with_instances" / "vidA" / "00007.h5",
                                out / "masks" / "vidA" / "00007.h5")
    (out / "images" / "vidA" / "00011.jpg").unlink()  # as if the run had stopped mid-video
    summary = prepare_dataset("a2d", a2d_raw, out, show_progress=False)
    assert summary.reused == 1 and (out / "images" / "vidA" / "00011.jpg").is_file()


def _a2d_copy(a2d_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(a2d_raw, raw)
    return raw


def test_a2d_unreadable_video_names_the_file(a2d_raw, tmp_path):
    raw = _a2d_copy(a2d_raw, tmp_path)
    (raw / "Release" / "clips320H" / "vidB.mp4").write_bytes(b"not an mp4 at all" * 20)
    with pytest.raises(LBDTError, match=r"vidB\.mp4: unreadable video"):
        prepare_dataset("a2d", raw, tmp_path / "out", show_progress=False)


def test_a2d_h5_without_remask_names_the_file(a2d_raw, tmp_path):
    raw = _a2d_copy(a2d_raw, tmp_path)
    h5 = raw / "text_annotations" / "a2d_annotation_with_instances" / "vidA" / "00012.h5"
    with h5py.File(h5, "a") as f:
        del f["reMask"]
    with pytest.raises(LBDTError, match=r"00012\.h5: missing dataset\(s\) \['reMask'\]"):
        prepare_dataset("a2d", raw, tmp_path / "out", show_progress=False)


@pytest.mark.parametrize("damage,msg", [
    (lambda raw: (raw / "text_annotations" / "a2d_annotation.txt").unlink(),
     r"A2D sentence annotations not found: .*a2d_annotation\.txt"),
    (lambda raw: (raw / "text_annotations" / "a2d_annotation.txt").write_text("vid,query\nvidA,a man\n"),
     r"a2d_annotation\.txt: malformed CSV header"),
    (lambda raw: (raw / "Release" / "videoset.csv").write_text("vidA,11,0,1,48,64,12,2,maybe\n"),
     r"videoset\.csv:1: expected"),
])
def test_a2d_bad_annotation_files_name_the_file(a2d_raw, tmp_path, damage, msg):
    raw = _a2d_copy(a2d_raw, tmp_path)
    damage(raw)
    with pytest.raises(LBDTError, match=msg):
        prepare_dataset("a2d", raw, tmp_path / "out", show_progress=False)


# ------------------------------------------------------------------------------------------------ J-HMDB
@pytest.fixture(scope="module")
def jhmdb_raw(tmp_path_factory):
    return make_jhmdb(tmp_path_factory.mktemp("jhmdb_raw"))


def test_jhmdb_layout_list_and_saved_frame_choice(jhmdb_raw, tmp_path):
    out = tmp_path / "out"
    summary = prepare_dataset("jhmdb", jhmdb_raw, out, show_progress=False)
    saved = json.loads((out / "jhmdb_frames.json").read_text())
    assert (saved["seed"], saved["frames_per_video"], saved["frame_gap"]) == (0, 3, 5)
    v1, v2 = saved["videos"]["v1"]["frames"], saved["videos"]["v2"]["frames"]
    assert len(v1) == 3 and v1 == sorted(v1) and all(6 <= t <= 10 for t in v1)  # > 5 and <= 10 mask frames
    assert v2 == [6, 7, 8]  # only three eligible frames
    lines = read_list(out / "val.txt", "comma6")
    expected = [(vid, f"{t:05d}", "1", JHMDB_VIDEOS[vid][3], JHMDB_SIZE, JHMDB_VIDEOS[vid][0])
                for vid, ts in (("v1", v1), ("v2", v2)) for t in ts]
    assert _fields(lines) == sorted(expected)
    assert summary.skipped == {"videos without a folder in Rename_Images": 1}
    for i, (vid, (action, n_img, n_mask, _)) in enumerate(JHMDB_VIDEOS.items()):
        assert len(list((out / "Rename_Images" / action / vid).glob("*.png"))) == n_img
        t = saved["videos"][vid]["frames"][0]
        assert np.abs(_mean_rgb(out / "Rename_Images" / action / vid / f"{t:05d}.png") - frame_colour(t, i)).max() < 1
        masks = scipy.io.loadmat(str(out / "puppet_mask" / action / vid / "puppet_mask.mat"))["part_mask"]
        assert masks.shape == (*JHMDB_SIZE, n_mask)


def test_jhmdb_frame_choice_is_deterministic_and_seeded(jhmdb_raw, tmp_path):
    a = prepare_dataset("jhmdb", jhmdb_raw, tmp_path / "a", show_progress=False, copy=True)
    b = prepare_dataset("jhmdb", jhmdb_raw, tmp_path / "b", show_progress=False)
    assert a.samples == b.samples == {"val.txt": 6}
    assert (tmp_path / "a" / "val.txt").read_text() == (tmp_path / "b" / "val.txt").read_text()
    candidates = [6, 7, 8, 9, 10, 11, 12]
    assert choose_frames(candidates, 3, 0, "v1") == choose_frames(list(candidates), 3, 0, "v1")
    assert len({tuple(choose_frames(candidates, 3, seed, "v1")) for seed in range(6)}) > 1  # the seed matters
    assert len({tuple(choose_frames(candidates, 3, 0, vid)) for vid in "abcdef"}) > 1  # so does the video


def test_jhmdb_rerun_reuses_saved_choice(jhmdb_raw, tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare_dataset("jhmdb", jhmdb_raw, out, show_progress=False)
    before = (out / "val.txt").read_text()

    def no_loading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(jhmdb_mod, "count_mask_frames", no_loading)
    summary = prepare_dataset("jhmdb", jhmdb_raw, out, show_progress=False)
    assert summary.reused == 2 and (out / "val.txt").read_text() == before
    with pytest.raises(AssertionError, match="read again"):  # another seed needs a new choice
        prepare_dataset("jhmdb", jhmdb_raw, out, show_progress=False, seed=1)


def test_jhmdb_bad_inputs_name_the_file(jhmdb_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(jhmdb_raw, raw)
    mat = raw / "puppet_mask" / "catch" / "v2" / "puppet_mask.mat"
    mat.write_bytes(b"garbage" * 30)
    with pytest.raises(LBDTError, match=r"v2/puppet_mask\.mat: unreadable MATLAB file"):
        prepare_dataset("jhmdb", raw, tmp_path / "out", show_progress=False)
    scipy.io.savemat(str(mat), {"other": np.zeros((2, 2))})
    with pytest.raises(LBDTError, match=r"puppet_mask\.mat: no variable 'part_mask'"):
        prepare_dataset("jhmdb", raw, tmp_path / "out", show_progress=False)
    (raw / "jhmdb_annotation.txt").unlink()
    with pytest.raises(LBDTError, match=r"not found: .*jhmdb_annotation\.txt"):
        prepare_dataset("jhmdb", raw, tmp_path / "out", show_progress=False)


# ------------------------------------------------------------------------------------------------ Ref-YTVOS
@pytest.fixture(scope="module")
def ytvos_raw(tmp_path_factory):
    return make_ytvos(tmp_path_factory.mktemp("ytvos_raw"))


def test_ytvos_layout_and_lists(ytvos_raw, tmp_path):
    out = tmp_path / "out"
    summary = prepare_dataset("ytvos", ytvos_raw, out, show_progress=False, val_fraction=0.34, seed=3)
    held = held_out_videos([f"t{i}" for i in range(6)], 0.34, 3)
    assert len(held) == 2
    assert {p.name for p in (out / "val" / "JPEGImages").iterdir()} == held | {"v0", "v1"}  # + official valid
    assert {p.name for p in (out / "val" / "Annotations").iterdir()} == held
    assert {p.name for p in (out / "train" / "Annotations").iterdir()} == {f"t{i}" for i in range(6)} - held
    index = np.asarray(Image.open(out / "val" / "Annotations" / min(held) / "00005.png"))
    assert np.array_equal(index, ytvos_index_map("00005"))  # palette indices intact

    def expected(videos, frames, ids):
        return sorted((vid, f, i, e["exp"], YTVOS_SIZE, "") for vid in videos for f in frames
                      for i, e in zip(ids, YTVOS_EXPRESSIONS.values()))
    train = read_list(out / "train.txt", "hash5")
    assert _fields(train) == expected(sorted({f"t{i}" for i in range(6)} - held), YTVOS_FRAMES, ["1", "2"])
    assert _fields(read_list(out / "val.txt", "tilde5")) == expected(sorted(held), YTVOS_FRAMES, ["1", "2"])
    valid = read_list(out / "valid_new_pure.txt", "hash5")
    assert sorted({r.video_id for r in valid}) == ["v0", "v1"]  # v2 is a test video
    assert sorted((r.video_id, r.frame_id, r.object_id, r.sentence, r.original_size) for r in valid) == sorted(
        (v, f, e, s, (16, 24)) for v in ("v0", "v1") for f in YTVOS_FRAMES[:2]
        for e, s in (("0", "a bird # flying ~ away"), ("1", "a tree")))
    meta = json.loads((out / "meta_expressions.json").read_text())["videos"]
    assert sorted(meta) == ["t0", "t1", "t2", "t3", "t4", "t5", "v0", "v1"]
    assert meta["t0"]["expressions"] == YTVOS_EXPRESSIONS
    assert summary.samples == {"train.txt": 24, "val.txt": 12, "valid_new_pure.txt": 8}
    assert summary.videos == {"train": 4, "val": 2, "valid": 2} and not summary.warnings


def test_ytvos_drop_absent_and_missing_test_json(tmp_path):
    raw = make_ytvos(tmp_path / "raw", train_videos=2, with_test=False)
    summary = prepare_dataset("ytvos", raw, tmp_path / "out", show_progress=False, val_fraction=0.0,
                              drop_absent=True)
    train = read_list(tmp_path / "out" / "train.txt", "hash5")
    assert len(train) == 2 * (3 + 2)  # object 2 is not annotated in frame 00010
    assert not any(r.object_id == "2" and r.frame_id == "00010" for r in train)
    assert summary.skipped == {"frames where the referred object is absent (drop_absent)": 2}
    assert summary.samples["val.txt"] == 0 and summary.videos["valid"] == 3
    assert len(summary.warnings) == 1 and "test/meta_expressions.json not found" in summary.warnings[0]


def test_ytvos_rerun_skips_and_a_new_split_moves_videos(ytvos_raw, tmp_path):
    out = tmp_path / "out"
    prepare_dataset("ytvos", ytvos_raw, out, show_progress=False, val_fraction=0.34, seed=3)
    jpg = next((out / "train" / "JPEGImages").rglob("*.jpg"))
    mtime = jpg.stat().st_mtime_ns
    again = prepare_dataset("ytvos", ytvos_raw, out, show_progress=False, val_fraction=0.34, seed=3)
    assert again.reused == 8 and jpg.stat().st_mtime_ns == mtime
    prepare_dataset("ytvos", ytvos_raw, out, show_progress=False, val_fraction=0.5, seed=4)
    train = {p.name for p in (out / "train" / "JPEGImages").iterdir()}
    val = {p.name for p in (out / "val" / "JPEGImages").iterdir()} - {"v0", "v1"}
    assert len(val) == 3 and not train & val and train | val == {f"t{i}" for i in range(6)}
    assert {p.name for p in (out / "val" / "Annotations").iterdir()} == val


def test_ytvos_malformed_json_names_the_file(ytvos_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(ytvos_raw, raw)
    p = raw / "meta_expressions" / "valid" / "meta_expressions.json"
    p.write_text('{"videos": {"v0": ')
    with pytest.raises(LBDTError, match=r"valid/meta_expressions\.json: malformed JSON"):
        prepare_dataset("ytvos", raw, tmp_path / "out", show_progress=False)
    p = raw / "meta_expressions" / "train" / "meta_expressions.json"
    p.write_text(json.dumps({"videos": {"t0": {"frames": ["00000"], "expressions": {"0": {"exp": "a cat"}}}}}))
    with pytest.raises(LBDTError, match=r"train/meta_expressions\.json: malformed entry for video 't0'"):
        prepare_dataset("ytvos", raw, tmp_path / "out", show_progress=False)
    p.unlink()
    with pytest.raises(LBDTError, match=r"expressions not found: .*train/meta_expressions\.json"):
        prepare_dataset("ytvos", raw, tmp_path / "out", show_progress=False)


# ------------------------------------------------------------------------------------------------ readers
def test_prepared_layouts_read_back_through_the_sources(a2d_out, jhmdb_raw, ytvos_raw, tmp_path):
    a2d = SOURCES["a2d"](a2d_out[0])
    rec = next(r for r in a2d.records("val") if (r.frame_id, r.object_id) == ("00009", "2"))
    assert np.array_equal(a2d.read_mask(rec), box_mask(A2D_SIZE, 20, 30))  # un-transposed, right instance
    assert a2d.reference_frame_id("vidB", "00009") == "00003"  # t - 6 among all native frames
    assert np.abs(a2d.read_frame("vidB", "00003").reshape(-1, 3).mean(0) - frame_colour(3, 1)).max() < 8

    prepare_dataset("jhmdb", jhmdb_raw, tmp_path / "j", show_progress=False)
    jhmdb = SOURCES["jhmdb"](tmp_path / "j")
    rec = next(r for r in jhmdb.records("val") if r.video_id == "v2" and r.frame_id == "00007")
    mask = scipy.io.loadmat(str(jhmdb_raw / "puppet_mask" / "catch" / "v2" / "puppet_mask.mat"))["part_mask"]
    assert np.array_equal(jhmdb.read_mask(rec), mask[:, :, 6] > 0)
    assert jhmdb.reference_frame_id("v2", "00007") == "00002"

    prepare_dataset("ytvos", ytvos_raw, tmp_path / "y", show_progress=False, val_fraction=0.34, seed=3)
    ytvos = SOURCES["ytvos"](tmp_path / "y")
    for split in ("train", "val"):
        for r in ytvos.records(split)[:6]:
            assert np.array_equal(ytvos.read_mask(r), ytvos_index_map(r.frame_id) == int(r.object_id))
            assert r.expression_id == {"1": "0", "2": "1"}[r.object_id]
    valid = ytvos.records("valid")
    assert len(valid) == 8 and ytvos.read_frame(valid[0].video_id, valid[0].frame_id).shape == (16, 24, 3)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_prepare_data_prints_summary_and_one_line_errors(jhmdb_raw, tmp_path, capsys):
    assert main(["prepare-data", "jhmdb", "--raw", str(jhmdb_raw), "--out", str(tmp_path / "j"),
                 "--no-progress", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "val.txt: 6 samples" in out and "1 × videos without a folder in Rename_Images" in out
    assert json.loads((tmp_path / "j" / "jhmdb_frames.json").read_text())["seed"] == 2
    assert main(["prepare-data", "ytvos", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "raw release folder not found" in err
