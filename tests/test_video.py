"""Video input (file / folder / arrays), its errors, and the overlay pictures and video writer."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from lbdt.data.video import open_video, to_rgb
from lbdt.errors import LBDTError
from lbdt.visualize import VideoWriter, contour, highlight_colors, overlay, side_by_side, text_size
from media import write_mp4


def smooth_frames(n, h=49, w=71):
    """Smooth gradients (compress well, survive the RGB↔YUV round trip within a few levels)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.stack([(xx * 3 + 10 * t) % 256, (yy * 4) % 256, np.full_like(xx, 40 * t % 256)], -1).astype(np.uint8)
            for t in range(n)]


def test_mp4_streams_all_frames_at_original_size(tmp_path):
    frames = smooth_frames(6)
    write_mp4(tmp_path / "clip.mp4", frames, fps=30)
    reader = open_video(tmp_path / "clip.mp4")
    assert reader.fps == pytest.approx(30.0) and reader.num_frames == 6 and reader.name == "clip.mp4"
    got = list(reader)
    assert [f.index for f in got] == list(range(6)) and [f.frame_id for f in got] == [f"{i:05d}" for i in range(6)]
    for f, ref in zip(got, frames):
        assert f.image.shape == (49, 71, 3) and f.image.dtype == np.uint8
        assert np.abs(f.image.astype(int) - ref.astype(int)).mean() < 3  # colour-space rounding only
    assert len(list(reader)) == 6  # a file can be read again


@pytest.mark.parametrize("suffix,codec", [(".webm", "libvpx-vp9"), (".avi", "mpeg4"), (".mov", "libx264")])
def test_other_containers(tmp_path, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
        for f in smooth_frames(5, 48, 64):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    frames = list(open_video(path))
    assert len(frames) == 5 and frames[0].image.shape == (48, 64, 3)


def test_frame_folder_natural_order_and_mode_conversion(tmp_path):
    rgb = np.zeros((49, 71, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "frame10.png")
    Image.fromarray(np.full((49, 71), 77, np.uint8)).save(tmp_path / "frame2.png")  # grayscale
    rgba = np.zeros((49, 71, 4), np.uint8)
    rgba[..., 1] = 150
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "frame1.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = list(open_video(tmp_path))
    assert [f.frame_id for f in frames] == ["frame1", "frame2", "frame10"]
    assert frames[0].image[0, 0].tolist() == [0, 150, 0]  # alpha dropped
    assert frames[1].image[0, 0].tolist() == [77, 77, 77]  # gray → RGB
    assert frames[2].image[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize(
    "frame,expected",
    [
        (np.full((3, 5), 9, np.uint8), [9, 9, 9]),
        (np.full((3, 5, 1), 9, np.uint8), [9, 9, 9]),
        (np.dstack([np.full((3, 5), v, np.uint8) for v in (1, 2, 3, 4)]), [1, 2, 3]),
        (np.full((3, 5, 3), 0.5, np.float32), [128, 128, 128]),
        (np.ones((3, 5), bool), [255, 255, 255]),
    ],
)
def test_to_rgb_conversions(frame, expected):
    out = to_rgb(frame)
    assert out.shape == (3, 5, 3) and out.dtype == np.uint8 and out[1, 2].tolist() == expected


def test_arrays_lists_and_generators():
    video = np.random.default_rng(0).integers(0, 255, (4, 9, 11), dtype=np.uint8)  # [T,H,W] grayscale
    frames = list(open_video(video))
    assert len(frames) == 4 and frames[2].image.shape == (9, 11, 3)
    assert np.array_equal(frames[2].image[..., 1], video[2])
    gen = open_video(f for f in video)
    assert gen.num_frames is None and len(list(gen)) == 4
    with pytest.raises(LBDTError, match="already been read"):
        list(gen)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(LBDTError, match="no such file") as e:
        open_video(tmp_path / "missing.mp4")
    assert "missing.mp4" in _one_line(e)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LBDTError, match="unsupported file type '.txt'") as e:
        open_video(tmp_path / "notes.txt")
    _one_line(e)
    (tmp_path / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LBDTError, match="broken.mp4: cannot read video") as e:
        open_video(tmp_path / "broken.mp4")
    _one_line(e)
    with av.open(str(tmp_path / "empty.mp4"), "w") as c:  # a header and no frames
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(LBDTError, match="empty.mp4: video is empty") as e:
        open_video(tmp_path / "empty.mp4")
    _one_line(e)
    (tmp_path / "frames").mkdir()
    with pytest.raises(LBDTError, match="folder has zero frames") as e:
        open_video(tmp_path / "frames")
    _one_line(e)
    with pytest.raises(LBDTError, match="zero frames"):
        open_video([])
    with pytest.raises(LBDTError, match="zero frames"):
        list(open_video(iter([])))
    with pytest.raises(LBDTError, match=r"frame 1: expected an image"):
        list(open_video([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 2), np.uint8)]))
    (tmp_path / "frames" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(LBDTError, match="bad.png: unreadable image"):
        list(open_video(tmp_path / "frames"))
    with pytest.raises(LBDTError, match="unsupported video input"):
        open_video(42)


def test_contour_of_a_square_is_its_border():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    ring = contour(mask)
    assert ring.sum() == 12 and ring[2, 2] and ring[5, 3] and not ring[3, 3] and not ring[0, 0]


def test_overlay_tints_inside_and_draws_the_contour():
    frame = np.full((100, 160, 3), 100, np.uint8)
    mask = np.zeros((100, 160), bool)
    mask[60:90, 10:50] = True
    out = overlay(frame, mask, color=(255, 0, 0), alpha=0.5, sentence="the red circle — ünïcode")
    assert out.shape == frame.shape
    assert out[75, 30].tolist() == [178, 50, 50]  # 0.5·100 + 0.5·tint, rounded
    assert out[60, 30].tolist() == [255, 0, 0]  # contour pixel
    assert out[95, 120].tolist() == [100, 100, 100]  # background untouched
    assert not np.array_equal(out[:12], frame[:12])  # caption band drawn at the top


def test_side_by_side_layout():
    img = np.zeros((10, 20, 3), np.uint8)
    strip = side_by_side([[img, np.ones((10, 20), bool), np.zeros((5, 10), bool)]] * 2, gap=2, titles=["a", "b", "c"])
    assert strip.shape == (14 + 10 * 2 + 2, 20 * 3 + 2 * 2, 3)
    assert strip[14 + 5, 22 + 5].tolist() == [255, 255, 255]  # the all-true mask is white


def test_video_writer_is_atomic_and_pads_odd_sizes(tmp_path):
    path = tmp_path / "out" / "overlay.mp4"
    w = VideoWriter(path, fps=12)
    for f in smooth_frames(3, 49, 71):
        w.write(f)
    assert not path.exists()  # only the temporary file while writing
    w.close()
    frames = list(open_video(path))
    assert len(frames) == 3 and frames[0].image.shape == (50, 72, 3)
    assert [p.name for p in path.parent.iterdir()] == ["overlay.mp4"]
    aborted = VideoWriter(tmp_path / "aborted.mp4")
    aborted.write(smooth_frames(1)[0])
    aborted.abort()
    assert list(tmp_path.glob("*aborted*")) == []


def test_highlight_colours_stand_away_from_every_synthetic_colour():
    from lbdt.data.synth import COLOURS, make_clip

    for seed in range(24):
        clip = make_clip(seed, frames=4)
        picked = highlight_colors(clip.palette, 2)
        assert len(set(picked)) == 2
        for c in picked:  # > 120 RGB units from each colour in the clip (red on a red cross was the complaint)
            assert min(np.linalg.norm(np.subtract(c, p)) for p in clip.palette) > 120, (seed, c)
    assert highlight_colors([(255, 0, 255)], 1) == [(128, 255, 0)]  # lime: 382 from magenta, cyan 361, azure 285
    assert len(highlight_colors(list(COLOURS.values()), 3)) == 3


def test_captions_are_sized_to_the_frame():
    assert [text_size(h) for h in (96, 192, 480, 1080, 4000)] == [10, 12, 30, 48, 48]
    small, large = (overlay(np.full((h, w, 3), 100, np.uint8), np.zeros((h, w), bool), sentence="a red circle")
                    for h, w in ((120, 160), (720, 960)))
    band = [int((img[:, :, 0] != 100).any(axis=1).nonzero()[0].max()) + 1 for img in (small, large)]
    assert band[0] < 30 and band[1] > 2.5 * band[0]  # the dark band (and the text in it) grows with the frame
