import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lbdt.errors import LBDTError
from lbdt.evaluation.writers import (
    PngMaskWriter,
    SubmissionWriter,
    format_metrics_table,
    save_mask_png,
)
from lbdt.io import write_json
from lbdt.types import Prediction, SampleMeta


def _meta(video="v1", obj="1", frame="00005", exp="", sentence="a cat"):
    return SampleMeta(
        dataset="ytvos", video_id=video, object_id=obj, frame_id=frame, ref_frame_id=frame,
        sentence=sentence, original_size=(3, 4), expression_id=exp,
    )


MASK = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)


def test_save_mask_png_round_trip(tmp_path):
    path = tmp_path / "a" / "b.png"
    save_mask_png(path, MASK.astype(np.uint8))  # {0,1} input accepted
    img = Image.open(path)
    assert img.mode == "L" and img.size == (4, 3)
    arr = np.asarray(img)
    assert set(np.unique(arr)) == {0, 255}
    assert np.array_equal(arr == 255, MASK)
    assert [p.name for p in path.parent.iterdir()] == ["b.png"]  # no temp file left behind


def test_save_mask_png_rejects_3d(tmp_path):
    with pytest.raises(ValueError):
        save_mask_png(tmp_path / "x.png", np.zeros((2, 2, 3), bool))


def test_png_mask_writer_layout(tmp_path):
    writer = PngMaskWriter(root=tmp_path)
    writer.write(Prediction(meta=_meta(obj="2"), mask=MASK))
    writer.write(Prediction(meta=_meta(obj="2", exp="0", frame="00010"), mask=~MASK))
    writer.close()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "v1" / "2" / "00005.png")) == 255, MASK)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "v1" / "0" / "00010.png")) == 255, ~MASK)
    assert writer.count == 2


def test_png_mask_writer_keeps_every_sentence_of_an_object(tmp_path):
    writer = PngMaskWriter(root=tmp_path)
    writer.write(Prediction(meta=_meta(obj="3", sentence="the man"), mask=MASK))
    writer.write(Prediction(meta=_meta(obj="3", sentence="a man walking"), mask=~MASK))
    writer.write(Prediction(meta=_meta(obj="3", sentence="the man", frame="00010"), mask=MASK))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == [
        "v1/3-s1/00005.png", "v1/3/00005.png", "v1/3/00010.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "v1" / "3-s1" / "00005.png")) == 255, ~MASK)


def test_ytvos_submission_zip(tmp_path):
    zpath = tmp_path / "out" / "submission.zip"
    writer = SubmissionWriter(zip_path=zpath)
    writer.write(Prediction(meta=_meta(exp="0"), mask=MASK))
    writer.write(Prediction(meta=_meta(exp="1"), mask=MASK))
    assert not zpath.exists()  # only appears when complete
    with pytest.raises(LBDTError):
        writer.write(Prediction(meta=_meta(exp="1"), mask=MASK))
    writer.close()
    with zipfile.ZipFile(zpath) as z:
        assert sorted(z.namelist()) == ["Annotations/v1/0/00005.png", "Annotations/v1/1/00005.png"]
        with z.open("Annotations/v1/1/00005.png") as f:
            assert np.array_equal(np.asarray(Image.open(f)) == 255, MASK)
    assert [p.name for p in zpath.parent.iterdir()] == ["submission.zip"]


def test_ytvos_submission_abort_leaves_nothing(tmp_path):
    writer = SubmissionWriter(zip_path=tmp_path / "s.zip")
    writer.write(Prediction(meta=_meta(exp="0"), mask=MASK))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_metrics_json_and_table(tmp_path):
    report = {"protocol": "lbdt", "N": 3, "overall_iou": np.float32(0.5), "by_type": {"motion": {"J": float("nan")}}}
    write_json(tmp_path / "m.json", report)
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded == {"protocol": "lbdt", "N": 3, "overall_iou": 0.5, "by_type": {"motion": {"J": None}}}
    table = format_metrics_table(report, title="t")
    lines = table.splitlines()
    assert lines[0] == "t"
    assert any(line.split() == ["overall_iou", "0.5000"] for line in lines)
    assert any(line.split() == ["by_type/motion/J", "nan"] for line in lines)


# ------------------------------------------------------------------ submission validator

from lbdt.evaluation.submission import expected_entries, validate_submission

META = {"videos": {
    "vA": {"expressions": {"0": {"exp": "a cat"}, "1": {"exp": "a dog"}}, "frames": ["00000", "00005"]},
    "vB": {"expressions": {"0": {"exp": "a bird"}}, "frames": ["00000"]},
    "vT": {"expressions": {"0": {"exp": "test only"}}, "frames": ["00000"]},
}}
TEST_META = {"videos": {"vT": META["videos"]["vT"]}}


def _write_meta(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps(META))
    (tmp_path / "test_meta.json").write_text(json.dumps(TEST_META))
    return tmp_path / "meta.json", tmp_path / "test_meta.json"


def _good_zip(path, skip=()):
    writer = SubmissionWriter(zip_path=path)
    for vid in ("vA", "vB"):
        entry = META["videos"][vid]
        for exp in entry["expressions"]:
            for frame in entry["frames"]:
                if (vid, exp, frame) not in skip:
                    writer.write(Prediction(meta=_meta(video=vid, exp=exp, frame=frame), mask=MASK))
    writer.close()
    return path


def _png_bytes(arr):
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_expected_entries_drop_test_videos(tmp_path):
    meta, test_meta = _write_meta(tmp_path)
    assert len(expected_entries(meta)) == 6
    names = expected_entries(meta, test_meta)
    assert len(names) == 5 and "Annotations/vA/1/00005.png" in names and "Annotations/vT/0/00000.png" not in names


def test_validator_accepts_writer_output(tmp_path):
    meta, test_meta = _write_meta(tmp_path)
    assert validate_submission(_good_zip(tmp_path / "s.zip"), meta, test_meta) == []


def test_validator_catches_missing_extra_and_malformed(tmp_path):
    meta, test_meta = _write_meta(tmp_path)
    zpath = _good_zip(tmp_path / "s.zip", skip={("vA", "1", "00005"), ("vB", "0", "00000")})
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("Annotations/vB/0/00000.png", _png_bytes(np.full((3, 4), 128, np.uint8)))  # wrong values
        z.writestr("Annotations/vA/7/00000.png", _png_bytes(np.zeros((3, 4), np.uint8)))  # unknown expression
        z.writestr("vA/0/00000.png", b"x")  # wrong top folder
    problems = validate_submission(zpath, meta, test_meta)
    assert "missing: Annotations/vA/1/00005.png" in problems
    assert any(p.startswith("malformed: Annotations/vB/0/00000.png: values other than 0/255 (128)") for p in problems)
    assert "extra file: Annotations/vA/7/00000.png" in problems
    assert any(p.startswith("extra file: vA/0/00000.png") and "top folder" in p for p in problems)
    assert len(problems) == 4
    # without the test meta, vT's frame is expected too
    assert "missing: Annotations/vT/0/00000.png" in validate_submission(zpath, meta)


def test_validator_catches_rgb_unreadable_and_sizes(tmp_path):
    meta, test_meta = _write_meta(tmp_path)
    zpath = _good_zip(tmp_path / "s.zip", skip={("vA", "0", "00000"), ("vA", "0", "00005"), ("vB", "0", "00000")})
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("Annotations/vA/0/00000.png", _png_bytes(np.zeros((3, 4, 3), np.uint8)))  # RGB
        z.writestr("Annotations/vA/0/00005.png", b"not a png")
        z.writestr("Annotations/vB/0/00000.png", _png_bytes(np.zeros((5, 5), np.uint8)))
    frames = tmp_path / "JPEGImages" / "vB"
    frames.mkdir(parents=True)
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(frames / "00000.jpg")
    problems = validate_submission(zpath, meta, test_meta, images_root=tmp_path / "JPEGImages")
    assert any("vA/0/00000.png: not a single-channel 8-bit PNG (mode RGB" in p for p in problems)
    assert any("vA/0/00005.png: not a readable image" in p for p in problems)
    assert "wrong size: Annotations/vB/0/00000.png: 5x5 (H x W), frame is 6x7" in problems
    assert len(problems) == 3


def test_validator_bad_inputs(tmp_path):
    meta, _ = _write_meta(tmp_path)
    (tmp_path / "bad.zip").write_bytes(b"nope")
    assert validate_submission(tmp_path / "bad.zip", meta) == [f"{tmp_path / 'bad.zip'}: not a zip file"]
    with pytest.raises(LBDTError, match="not found"):
        validate_submission(tmp_path / "none.zip", meta)
    (tmp_path / "m2.json").write_text('{"video": {}}')
    with pytest.raises(LBDTError, match="videos"):
        validate_submission(tmp_path / "bad.zip", tmp_path / "m2.json")


def test_metrics_table_with_labels():
    table = format_metrics_table({"N": 4, "sub": {"mean_iou": 0.25}}, labels={"mean_iou": "mean IoU"})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "meaning"]
    assert lines[2].split() == ["N", "4"]
    assert lines[3].split() == ["sub/mean_iou", "0.2500", "mean", "IoU"]
