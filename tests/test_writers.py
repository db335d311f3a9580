import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lbdt.errors import LBDTError
from lbdt.evaluation.writers import (
    PngMaskWriter,
    YTVOSSubmissionWriter,
    format_metrics_table,
    save_mask_png,
    save_metrics_json,
)
from lbdt.types import Prediction, SampleMeta


def _meta(video="v1", obj="1", frame="00005", exp=""):
    return SampleMeta(
        dataset="ytvos", video_id=video, object_id=obj, frame_id=frame, ref_frame_id=frame,
        sentence="a cat", original_size=(3, 4), expression_id=exp,
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


def test_ytvos_submission_zip(tmp_path):
    zpath = tmp_path / "out" / "submission.zip"
    writer = YTVOSSubmissionWriter(zip_path=zpath)
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
    writer = YTVOSSubmissionWriter(zip_path=tmp_path / "s.zip")
    writer.write(Prediction(meta=_meta(exp="0"), mask=MASK))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_metrics_json_and_table(tmp_path):
    report = {"protocol": "lbdt", "N": 3, "overall_iou": np.float32(0.5), "by_type": {"motion": {"J": float("nan")}}}
    save_metrics_json(tmp_path / "m.json", report)
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded == {"protocol": "lbdt", "N": 3, "overall_iou": 0.5, "by_type": {"motion": {"J": None}}}
    table = format_metrics_table(report, title="t")
    lines = table.splitlines()
    assert lines[0] == "t"
    assert any(line.split() == ["overall_iou", "0.5000"] for line in lines)
    assert any(line.split() == ["by_type/motion/J", "nan"] for line in lines)
