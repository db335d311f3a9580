"""Sources read the synthetic benchmark back exactly as written; reference frames; every bad input is one
`LBDTError` naming the file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import TINY
from lbdt.data.sampling import reference_frame
from lbdt.data.sources import SOURCES, A2DSource, JHMDBSource, YTVOSSource
from lbdt.data.synth import SPLITS, benchmark_video
from lbdt.errors import LBDTError


def _truth(fmt: str, split: str, index: int):
    return benchmark_video(TINY["seed"], split, index, fmt=fmt, frames=TINY["frames"], size=TINY["size"],
                           annotated=TINY["annotated"])


def _object_id(fmt: str, o: int) -> str:
    return str(o + 1) if fmt == "ytvos" else str(o)


# ---------------------------------------------------------------- read back what `lbdt synth` wrote
@pytest.mark.parametrize("fmt", ["a2d", "jhmdb", "ytvos"])
def test_read_back_matches_generator(synth_roots, fmt):
    source = SOURCES[fmt](synth_roots[fmt])
    for split, n in zip(SPLITS, TINY["videos"]):
        records = source.records(split)
        expected = []
        for i in range(n):
            v = _truth(fmt, split, i)
            for t in v.annotated:
                for o in v.targets:
                    ob = v.clip.objects[o]
                    expected.append((v.video_id, v.frame_names[t], _object_id(fmt, o), ob.sentence, TINY["size"],
                                     ob.sentence_type))
        got = [(r.video_id, r.frame_id, r.object_id, r.sentence, r.original_size, r.category) for r in records]
        assert got == expected
        for i in range(n):
            v = _truth(fmt, split, i)
            assert source.frame_ids(v.video_id) == v.frame_names
            for t in v.annotated:
                frame = source.read_frame(v.video_id, v.frame_names[t])
                assert frame.shape == (*TINY["size"], 3) and frame.dtype == np.uint8
                err = np.abs(frame.astype(int) - v.clip.frames[t].astype(int)).mean()
                assert err < (0.01 if fmt == "jhmdb" else 6.0)  # PNG lossless, JPEG close (noise is ±3)
        for r in records:
            i = int(r.video_id.rsplit("_", 1)[1])
            v = _truth(fmt, split, i)
            o = int(r.object_id) - (1 if fmt == "ytvos" else 0)
            mask = source.read_mask(r)
            assert mask.dtype == bool and mask.shape == TINY["size"]
            np.testing.assert_array_equal(mask, v.clip.masks[o, v.frame_names.index(r.frame_id)])


@pytest.mark.parametrize("fmt", ["a2d", "jhmdb", "ytvos"])
def test_reference_frames_and_clamping(synth_roots, fmt):
    source = SOURCES[fmt](synth_roots[fmt])
    v = _truth(fmt, "train", 0)  # video 0 always has annotated index 1 (near the start)
    assert 1 in v.annotated
    k = source.default_frame_gap
    assert k == {"a2d": 6, "jhmdb": 5, "ytvos": 1}[fmt]
    for t in v.annotated:
        ref = source.reference_frame_id(v.video_id, v.frame_names[t])
        assert ref == v.frame_names[max(t - k, 0)]
    # clamped at the start: frame index 1 with k >= 2 goes to the first frame
    assert source.reference_frame_id(v.video_id, v.frame_names[1], 3) == v.frame_names[0]
    assert source.reference_frame_id(v.video_id, v.frame_names[0]) == v.frame_names[0]


def test_reference_frame_rules():
    ids = ["00001", "00002", "00003", "00007", "00010"]
    assert reference_frame(ids, "00010", 6, numbered=True) == "00003"  # 4 is not stored: last stored <= 4
    assert reference_frame(ids, "00007", 6, numbered=True) == "00001"  # exactly t - 6
    assert reference_frame(ids, "00003", 6, numbered=True) == "00001"  # clamped
    ytvos = ["00000", "00005", "00010"]
    assert reference_frame(ytvos, "00010", 1) == "00005"
    assert reference_frame(ytvos, "00000", 1) == "00000"
    assert reference_frame(ytvos, "00010", 5) == "00000"
    with pytest.raises(KeyError):
        reference_frame(ytvos, "00003", 1)


def test_ytvos_valid_split_has_expression_ids_and_no_masks(synth_roots):
    source = YTVOSSource(synth_roots["ytvos"])
    valid = source.records("valid")
    assert not source.has_masks("valid") and source.has_masks("val") and source.has_masks("test")
    n_frames, n_exp = TINY["frames"], 4
    assert len(valid) == TINY["videos"][2] * n_frames * n_exp
    v = _truth("ytvos", "test", 0)
    first = [r for r in valid if r.video_id == v.video_id][:n_exp]
    assert [r.expression_id for r in first] == [str(o) for o in range(n_exp)]
    assert [r.sentence for r in first] == [o.sentence for o in v.clip.objects]
    assert [r.category for r in first] == [o.sentence_type for o in v.clip.objects]
    # train/val records get their expression id from meta_expressions.json
    train = source.records("train")
    assert all(r.expression_id == str(int(r.object_id) - 1) for r in train)
    assert source.video_dir(v.video_id) == synth_roots["ytvos"] / "val" / "JPEGImages" / v.video_id


# ---------------------------------------------------------------- hand-made mask files
def test_a2d_single_instance_remask_is_transposed(tmp_path):
    root = tmp_path / "a2d"
    (root / "masks" / "vid").mkdir(parents=True)
    mask = np.zeros((3, 5), dtype=np.uint8)  # [H,W]
    mask[0, 4] = mask[2, 1] = 1
    with h5py.File(root / "masks" / "vid" / "00004.h5", "w") as f:
        f["instance"] = np.array([2.0])
        f["reMask"] = mask.T  # stored [W,H]
    (root / "val.txt").write_text("vid/00004,3,5,2,the thing, yes,cat\n")
    rec = A2DSource(root).records("val")[0]
    assert rec.sentence == "the thing, yes"
    np.testing.assert_array_equal(A2DSource(root).read_mask(rec), mask.astype(bool))


def test_jhmdb_v73_mat_read_with_h5py(tmp_path):
    root = tmp_path / "jhmdb"
    d = root / "puppet_mask" / "walk" / "v1"
    d.mkdir(parents=True)
    (root / "Rename_Images" / "walk" / "v1").mkdir(parents=True)
    part = np.zeros((4, 6, 3), dtype=np.uint8)  # [H,W,T]
    part[1, 2, 1] = part[3, 5, 2] = 1
    with h5py.File(d / "puppet_mask.mat", "w") as f:  # MATLAB v7.3 = HDF5, stored transposed [T,W,H]
        f["part_mask"] = part.transpose(2, 1, 0)
    (root / "val.txt").write_text("v1/00002,4,6,0,someone walking,walk\nv1/00003,4,6,0,x,walk\n")
    src = JHMDBSource(root)
    r2, r3 = src.records("val")
    np.testing.assert_array_equal(src.read_mask(r2), part[:, :, 1] > 0)
    np.testing.assert_array_equal(src.read_mask(r3), part[:, :, 2] > 0)


# ---------------------------------------------------------------- bad input
def _first(source, split="train"):
    return source.records(split)[0]


def _raises_naming(fn, path: Path, *words: str):
    with pytest.raises(LBDTError) as e:
        fn()
    msg = str(e.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("fmt", ["a2d", "jhmdb", "ytvos"])
def test_missing_frame(copy_benchmark, fmt):
    source = SOURCES[fmt](copy_benchmark(fmt))
    r = _first(source)
    path = source.frame_path(r.video_id, r.frame_id)
    path.unlink()
    _raises_naming(lambda: source.read_frame(r.video_id, r.frame_id), path, "not found")
    fresh = SOURCES[fmt](source.root)  # the stored-frame list no longer has it
    _raises_naming(lambda: fresh.reference_frame_id(r.video_id, r.frame_id), path, "not found")


@pytest.mark.parametrize("fmt", ["a2d", "jhmdb", "ytvos"])
def test_unreadable_image(copy_benchmark, fmt):
    source = SOURCES[fmt](copy_benchmark(fmt))
    r = _first(source)
    path = source.frame_path(r.video_id, r.frame_id)
    path.write_bytes(b"this is not an image")
    _raises_naming(lambda: source.read_frame(r.video_id, r.frame_id), path, "unreadable image")


@pytest.mark.parametrize("fmt", ["a2d", "jhmdb", "ytvos"])
def test_missing_and_corrupt_mask(copy_benchmark, fmt):
    source = SOURCES[fmt](copy_benchmark(fmt))
    r = _first(source)
    path = source.mask_path(r)
    path.write_bytes(b"\x89HDF garbage \x00" * 10)
    _raises_naming(lambda: source.read_mask(r), path, "unreadable")
    path.unlink()
    _raises_naming(lambda: source.read_mask(r), path, "mask file not found", r.source_line)


def test_ytvos_rgb_annotation_is_rejected(copy_benchmark):
    source = YTVOSSource(copy_benchmark("ytvos"))
    r = _first(source)
    path = source.mask_path(r)
    Image.new("RGB", (4, 4)).save(path)
    _raises_naming(lambda: source.read_mask(r), path, "palette")


def test_unknown_instance_id(copy_benchmark):
    root = copy_benchmark("a2d")
    lines = (root / "train.txt").read_text().splitlines()
    video_frame, h, w, _, rest = lines[0].split(",", 4)
    lines[0] = f"{video_frame},{h},{w},9,{rest}"
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    source = A2DSource(root)
    r = _first(source)
    msg = _raises_naming(lambda: source.read_mask(r), source.mask_path(r), "instance id 9", "train.txt:1")
    assert "ids: 0, 1, 2, 3" in msg


def test_jhmdb_frame_beyond_mask(copy_benchmark):
    root = copy_benchmark("jhmdb")
    source = JHMDBSource(root)
    r = _first(source)
    part = scipy.io.loadmat(source.mask_path(r))["part_mask"]
    scipy.io.savemat(source.mask_path(r), {"part_mask": part[:, :, :1]})
    assert r.frame_id != "00001"  # annotated frames start at index 1
    _raises_naming(lambda: source.read_mask(r), source.mask_path(r), "no mask for frame")


@pytest.mark.parametrize("line, problem", [
    ("vid/00001,64,96,0,,appearance", "empty sentence"),
    ("vid/00001,64,96,0,a sentence without category", "expected 6"),
    ("vid00001,64,96,0,a sentence,appearance", "<video>/<frame>"),
    ("vid/00001,sixty,96,0,a sentence,appearance", "orig_h"),
])
def test_malformed_list_line(copy_benchmark, line, problem):
    root = copy_benchmark("a2d")
    text = (root / "val.txt").read_text()
    (root / "val.txt").write_text(text + line + "\n")
    n = len(text.splitlines()) + 1
    _raises_naming(lambda: A2DSource(root).records("val"), root / "val.txt", f":{n}", problem)


def test_missing_root_and_list(tmp_path):
    _raises_naming(lambda: A2DSource(tmp_path / "nope"), tmp_path / "nope", "dataset root not found")
    _raises_naming(lambda: A2DSource(tmp_path).records("train"), tmp_path / "train.txt", "not found")
    _raises_naming(lambda: JHMDBSource(tmp_path).frame_ids("v"), tmp_path / "Rename_Images", "not found")
