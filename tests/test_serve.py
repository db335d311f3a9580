"""`lbdt serve`: `segment_clip` against the plain `VideoSegmenter`, then the Gradio app on 127.0.0.1 driven by
Gradio's own client (clip + sentence in, overlay video + masks zip out; limits, unreadable files, served paths)."""

from __future__ import annotations

import io
import math
import sys
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lbdt.cli import main
from lbdt.data.synth import make_clip
from lbdt.errors import LBDTError
from lbdt.predictor import VideoSegmenter
from lbdt.tools.serve import Limits, parse_sentences, segment_clip
from media import write_mp4
from serving import running_app

SIZE = (48, 64)  # source frames (H, W): small, and not the model's 96x128


@pytest.fixture(scope="module")
def segmenter():
    return VideoSegmenter.from_pretrained("synthetic-tiny", batch_size=4, precision="fp32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 10-frame synthetic clip as an mp4 (lossless, so decoded frames equal the drawn ones), and a sentence."""
    drawn = make_clip(3, frames=10, size=SIZE, speed=1.5)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_mp4(path, list(drawn.frames), fps=10)
    return path, drawn.objects[0].sentence, drawn.frames


def zip_masks(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        return {n: np.asarray(Image.open(io.BytesIO(z.read(n)))) for n in z.namelist()}


def video_info(path: Path) -> tuple[int, int, int, str, str]:
    """(frames decoded, width, height, codec, pixel format)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = sum(1 for _ in c.decode(stream))
        return frames, stream.width, stream.height, stream.codec_context.name, stream.codec_context.pix_fmt


# ---------------------------------------------------------------- segment_clip (no Gradio)
def test_segment_clip_equals_the_segmenter(segmenter, clip, tmp_path):
    path, sentence, _ = clip
    other = "the small green square"
    result = segment_clip(segmenter, path, [sentence, other], out_dir=tmp_path)
    expected = list(segmenter.segment_many(path, [sentence, other]))
    assert result.frame_ids == [f"{i:05d}" for i in range(10)]
    assert result.size == SIZE and result.fps == pytest.approx(10.0)
    masks = zip_masks(result.masks_zip)
    assert len(masks) == 2 * 10  # one PNG per frame and sentence
    for t, preds in enumerate(expected):
        for j, pred in enumerate(preds):
            png = masks[f"{j:02d}_{'-'.join(pred.meta.sentence.lower().split())}/{t:05d}.png"]
            assert png.shape == SIZE and set(np.unique(png)) <= {0, 255}
            np.testing.assert_array_equal(png == 255, pred.mask)
            assert result.area[j][t] == pytest.approx(pred.mask.mean())
            assert result.score[j][t] == pytest.approx(pred.score)
    assert video_info(result.video) == (10, SIZE[1], SIZE[0], "h264", "yuv420p")  # what browsers play


def test_stride_keeps_every_nth_frame_and_about_k_source_frames_back(segmenter, clip, tmp_path):
    path, sentence, frames = clip
    result = segment_clip(segmenter, path, [sentence], out_dir=tmp_path, stride=3, threshold=0.3)
    assert result.frame_ids == ["00000", "00003", "00006", "00009"]
    assert result.fps == pytest.approx(10 / 3)
    # the same as segmenting the kept frames with k = round(6 / 3) = 2 and threshold 0.3
    kept = VideoSegmenter(segmenter.runnable, frame_gap=2, threshold=0.3, precision=segmenter.precision)
    expected = [p.mask for p in kept.segment(list(frames[::3]), sentence)]
    masks = zip_masks(result.masks_zip)
    assert sorted(masks) == sorted(f"00_{'-'.join(sentence.lower().split())}/{i}.png" for i in result.frame_ids)
    for i, mask in zip(result.frame_ids, expected):
        np.testing.assert_array_equal(masks[f"00_{'-'.join(sentence.lower().split())}/{i}.png"] == 255, mask)
    assert video_info(result.video)[0] == 4
    assert segmenter.threshold == 0.5 and segmenter.frame_gap == 6  # the shared segmenter is untouched


def test_warnings_name_unknown_words_and_empty_masks(segmenter, clip, tmp_path):
    path, sentence, _ = clip
    result = segment_clip(segmenter, path, [sentence, "the person riding a bike"], out_dir=tmp_path, threshold=1.0)
    assert result.warnings == [
        "sentence 1: the mask is empty on every frame",  # threshold 1: nothing is above it
        "sentence 2: the model does not know 'person', 'riding', 'bike' (read as zero vectors)",
        "sentence 2: the mask is empty on every frame",
    ]


def test_limits_and_bad_input(segmenter, clip, tmp_path):
    path, sentence, _ = clip
    with pytest.raises(LBDTError, match=r"^clip.mp4: 1.0 s long, over the 0.5 s limit$"):
        segment_clip(segmenter, path, [sentence], out_dir=tmp_path, max_seconds=0.5)
    with pytest.raises(LBDTError, match="no sentence"):
        parse_sentences(" \n\t\n")
    assert parse_sentences(" a red circle \n\n the cross\n") == ["a red circle", "the cross"]
    with pytest.raises(LBDTError, match="frame stride"):
        segment_clip(segmenter, path, [sentence], out_dir=tmp_path, stride=0)
    with pytest.raises(LBDTError, match="empty sentence"):
        segment_clip(segmenter, path, ["."], out_dir=tmp_path)
    with pytest.raises(LBDTError, match="limits must be positive"):
        Limits(max_upload_mb=0)
    assert not list(tmp_path.iterdir())  # nothing written for refused input


def test_cli_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == "lbdt serve: error: lbdt serve needs Gradio: pip install 'lbdt[serve]'"


# ---------------------------------------------------------------- the app, through Gradio's client
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory, max_seconds=3)


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_client_gets_overlay_video_and_masks(app, client, clip, segmenter):
    from gradio_client import handle_file

    assert app.url.startswith("http://127.0.0.1:")
    path, sentence, _ = clip
    video, masks_zip, area, score, notes = client.predict(handle_file(str(path)), sentence, 0.5, 1,
                                                          api_name="/segment")
    assert video_info(Path(video["video"] if isinstance(video, dict) else video)) == (10, SIZE[1], SIZE[0], "h264",
                                                                                      "yuv420p")
    masks = zip_masks(Path(masks_zip))
    assert len(masks) == 10 and all(m.shape == SIZE for m in masks.values())
    expected = [p.mask for p in segmenter.segment(path, sentence)]
    for t, mask in enumerate(expected):
        np.testing.assert_array_equal(masks[f"00_{'-'.join(sentence.lower().split())}/{t:05d}.png"] == 255, mask)
    assert [row[1] for row in area["data"]] == pytest.approx([100 * m.mean() for m in expected])
    assert len(score["data"]) == 10
    assert notes.startswith("10 frames at 64×48, 10 fps.")


def test_client_errors_are_one_clear_message(app, client, clip, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    path, sentence, _ = clip
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 10)
    with pytest.raises(AppError, match=r"^broken.mp4: cannot read video \("):
        client.predict(handle_file(str(broken)), sentence, 0.5, 1, api_name="/segment")
    with pytest.raises(AppError, match="^no sentence: type one sentence per line"):
        client.predict(handle_file(str(path)), "  \n", 0.5, 1, api_name="/segment")
    long = tmp_path / "long.mp4"
    write_mp4(long, [np.zeros((16, 16, 3), np.uint8)] * 40, fps=10)  # 4 s > 3 s
    with pytest.raises(AppError, match=r"^long.mp4: 4.0 s long, over the 3 s limit$"):
        client.predict(handle_file(str(long)), sentence, 0.5, 1, api_name="/segment")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AppError, match="notes.txt: unsupported file type '.txt'|Invalid file type"):
        client.predict(handle_file(str(text)), sentence, 0.5, 1, api_name="/segment")


def test_upload_over_the_limit_is_refused_by_the_server(app, tmp_path):
    import httpx

    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * math.ceil(0.3 * 1024 * 1024))  # over 0.2 MB
    response = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("big.mp4", big.read_bytes())})
    assert response.status_code == 413
    assert "maximum allowed size" in response.text
    assert not [p for p in app.workdir.rglob("big.mp4")]  # not stored


def test_files_are_served_only_from_the_app_folder(app):
    import httpx

    outside = [Path(__file__).resolve(), Path(sys.executable).resolve()]
    for path in outside:
        assert httpx.get(f"{app.url}gradio_api/file={path}").status_code == 403
    example = app.workdir / "examples" / "synthetic-example.mp4"
    assert httpx.get(f"{app.url}gradio_api/file={example}").status_code == 200


def test_page_shows_model_device_and_one_job_at_a_time(app):
    config = app.blocks.get_config_file()
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "`synthetic-tiny`" in texts and "| device | cpu |" in texts and "| precision | fp32 (requested) |" in texts
    assert "demonstration model trained only on lbdt's synthetic clips" in texts
    (segment,) = [fn for fn in app.blocks.fns.values() if fn.api_name == "segment"]
    assert segment.concurrency_limit == 1 and app.blocks._queue.default_concurrency_limit == 1
