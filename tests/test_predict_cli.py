"""`lbdt predict` on an mp4 the test writes and on a frame folder; its errors; `lbdt demo`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lbdt.cli import main
from lbdt.data.video import open_video
from lbdt.models.build import build_model
from lbdt.predictor import VideoSegmenter
from lbdt.words import WordVectors
from media import write_mp4

SENTENCES = ["the red circle moving left", "the blue square that is standing still"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny checkpoint in our format with its own word vectors (size 64x96, k = 3)."""
    from lbdt.data.synth import vocabulary

    torch.manual_seed(0)
    model = build_model("tiny")
    for m in model.modules():  # responsive outputs (see test_predictor.responsive_tiny)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.3)
    table = WordVectors.seeded(vocabulary(), seed=0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save({"format": "lbdt", "version": 1, "variant": "tiny", "model_config": dict(model.config),
                "model": model.state_dict(), "config": {"data": {"dataset": "a2d", "size": [64, 96], "frame_gap": 3}},
                "word_vectors": {"words": table.words, "vectors": torch.from_numpy(table.vectors)}}, path)
    return path


def moving_disc(n, h=49, w=71):
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        f = np.full((h, w, 3), 90, np.uint8)
        f[(yy - 24) ** 2 + (xx - 10 - 5 * t) ** 2 <= 64] = (220, 40, 40)
        frames.append(f)
    return frames


def read_png(path):
    with Image.open(path) as im:
        return im.mode, im.size, np.asarray(im)


def test_predict_on_an_mp4_with_two_sentences(tmp_path, weights, capsys):
    frames = moving_disc(9)
    write_mp4(tmp_path / "clip.mp4", frames, fps=24)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "clip.mp4"), "--text", SENTENCES[0], "--text", SENTENCES[1],
                 "--weights", str(weights), "--out", str(out), "--batch-size", "4"])
    assert code == 0
    assert "9 frames x 2 sentence(s)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 9 and summary["original_sizes"] == [[49, 71]] and summary["fps"] == pytest.approx(24)
    assert summary["model"]["size"] == [64, 96] and summary["model"]["frame_gap"] == 3
    expected = list(VideoSegmenter.from_pretrained(str(weights), batch_size=4).segment_many(tmp_path / "clip.mp4", SENTENCES))
    assert [s["folder"] for s in summary["sentences"]] == ["00_the-red-circle-moving-left",
                                                           "01_the-blue-square-that-is-standing-still"]
    for j, entry in enumerate(summary["sentences"]):
        masks = sorted((out / entry["masks"]).iterdir())
        assert [m.stem for m in masks] == [f"{t:05d}" for t in range(9)]
        for t, m in enumerate(masks):
            mode, size, pixels = read_png(m)
            assert mode == "L" and size == (71, 49) and set(np.unique(pixels)) <= {0, 255}
            assert np.array_equal(pixels == 255, expected[t][j].mask)  # the library's masks
            assert entry["foreground_fraction"][t] == pytest.approx((pixels == 255).mean(), abs=1e-6)
        video = list(open_video(out / entry["overlay"]))
        assert len(video) == 9 and video[0].image.shape == (50, 72, 3)  # padded to even for H.264
    assert sorted(p.name for p in out.iterdir()) == [s["folder"] for s in summary["sentences"]] + ["summary.json"]


def test_predict_on_a_frame_folder(tmp_path, weights):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(moving_disc(5, 33, 21)):
        Image.fromarray(f).save(folder / f"img_{t + 1}.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--text", SENTENCES[0], "--weights", str(weights), "--out", str(out),
                 "--no-overlay", "--frame-gap", "1"]) == 0
    masks = sorted((out / "00_the-red-circle-moving-left" / "masks").iterdir())
    assert [m.name for m in masks] == [f"img_{t}.png" for t in range(1, 6)]
    assert all(read_png(m)[1] == (21, 33) for m in masks)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["model"]["frame_gap"] == 1 and summary["sentences"][0]["overlay"] is None
    preds = list(VideoSegmenter.from_pretrained(str(weights), frame_gap=2, batch_size=2).segment(folder, SENTENCES[0]))
    assert [(p.meta.frame_id, p.meta.ref_frame_id) for p in preds] == [
        ("img_1", "img_1"), ("img_2", "img_1"), ("img_3", "img_1"), ("img_4", "img_2"), ("img_5", "img_3")]


@pytest.mark.parametrize("case,needle", [
    ("missing", "missing.mp4: no such file"),
    ("unreadable", "broken.mp4: cannot read video"),
    ("empty_folder", "folder has zero frames"),
    ("empty_sentence", "empty sentence"),
    ("unsupported", "unsupported file type '.txt'"),
])
def test_predict_errors_are_one_line_and_write_nothing(tmp_path, weights, capsys, case, needle):
    video, text = tmp_path / "clip.mp4", SENTENCES[0]
    if case == "missing":
        video = tmp_path / "missing.mp4"
    elif case == "unreadable":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"\x00\x01 not a video" * 50)
    elif case == "empty_folder":
        video = tmp_path / "frames"
        video.mkdir()
    elif case == "unsupported":
        video = tmp_path / "notes.txt"
        video.write_text("hi")
    else:
        write_mp4(video, moving_disc(2))
        text = "   "
    out = tmp_path / "out"
    code = main(["predict", str(video), "--text", text, "--weights", str(weights), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and err.startswith("lbdt predict: error:")
    assert not out.exists()


def test_demo_writes_its_outputs_and_reports_the_true_iou(tmp_path, weights, capsys):
    from lbdt.data.synth import SPEED, make_clip
    from lbdt.evaluation.metrics import iou

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "11", "--weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    clip = make_clip(11, frames=20, size=(64, 96), speed=SPEED["a2d"] * 64)
    target = [o.sentence for o in clip.objects].index(summary["sentence"])
    assert clip.objects[target].sentence_type == "motion"
    masks = sorted((out / "masks").iterdir())
    assert len(masks) == 20 and (out / "overlay.mp4").is_file() and (out / "strip.png").is_file()
    ious = [iou(read_png(m)[2] == 255, clip.masks[target, t]) for t, m in enumerate(masks)]
    assert summary["iou_per_frame"] == pytest.approx(ious) and summary["mean_iou"] == pytest.approx(np.mean(ious))
    assert summary["mean_iou_from_frame_k"] == pytest.approx(np.mean(ious[3:]))  # k = 3 in this checkpoint
    assert f"mean IoU {np.mean(ious):.3f}" in printed and "seed 11" in printed
    assert summary["benchmark_motion_mean_iou"] is None  # a checkpoint without a card: nothing to compare with
    with Image.open(out / "strip.png") as strip:
        assert strip.width == 3 * 96 * 2 + 2 * 4  # frame | prediction | ground truth at 2x
