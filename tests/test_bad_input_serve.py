"""Bad input on `lbdt serve` (issue 21): start-up options, and hostile requests to a running server on
127.0.0.1 (uploads of every wrong kind, sentences, slider values, paths, a full queue). Each case asserts the
exact one-line answer (naming the input) and that the next good request is still served.

Requests go through Gradio's own client where a browser could send the same thing, and through raw HTTP
(`/gradio_api/upload`, `/gradio_api/call/segment`) where only a hand-made client could."""

from __future__ import annotations

import json
import math
import socket
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from lbdt.cli import main
from lbdt.data.video import open_video
from lbdt.errors import LBDTError
from media import write_mp4
from serving import free_port, running_app

pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

LIMITS = {"max_upload_mb": 0.2, "max_seconds": 3, "max_frames": 12, "max_frame_pixels": 100 * 100,
          "max_sentences": 3, "max_queue": 2}
SENTENCE = "the red circle"
TYPES = "expected mp4, webm, mov, gif"


def tiny_gif(width: int, height: int) -> bytes:
    """A 35-byte GIF whose header declares `width` x `height` (one 1x1 frame of data)."""
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00" + b"\x3b")


def clip_frames(n: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    return [np.full((*size, 3), 10 * i, np.uint8) for i in range(n)]  # flat frames: a few KB, lossless


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory, **LIMITS)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_mp4(folder / "good.mp4", clip_frames(4), fps=10)
    return folder


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    return Client(app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def served(client, files) -> None:
    """The good request: 4 frames of 64x48 in, 4 masks out."""
    *_, notes = client.predict(handle_file(str(files / "good.mp4")), SENTENCE, 0.5, 1, api_name="/segment")
    assert notes.startswith("4 frames at 64×48, 10 fps, on cpu in fp32 (requested).")


def refused(client, files, message: str, *args) -> None:
    """`args` (video, text, threshold, stride) are refused with exactly `message`; the next request is served."""
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name="/segment")
    assert str(info.value) == message
    served(client, files)


def raw_call(app, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/segment with `data` as it is (no client-side upload), then read the event stream:
    ('complete', outputs) or ('error', message)."""
    posted = httpx.post(f"{app.url}gradio_api/call/segment", json={"data": data}, timeout=30)
    assert posted.status_code == 200, posted.text
    stream = httpx.get(f"{app.url}gradio_api/call/segment/{posted.json()['event_id']}", timeout=60).text
    events = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("data: ")]
    final, payload = events[-1], json.loads(payloads[-1])
    return final, payload["error"] if final == "error" else payload


# ---------------------------------------------------------------- uploads the reader refuses
def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("junk.mp4", b"not a video at all" * 20, "junk.mp4: cannot read video ("),
    ("empty.mp4", b"", "empty.mp4: cannot read video ("),
    ("zipped.mp4", b"PK\x03\x04" + b"\0" * 200, "zipped.mp4: cannot read video ("),
    ("big.gif", tiny_gif(14000, 14000),
     "big.gif: declares frames of 14000×14000 (196,000,000 pixels), over the limit of 10,000 pixels per frame"),
    ("wide.gif", tiny_gif(10001, 1),
     "wide.gif: declares frames of 10001×1 (10,001 pixels), over the limit of 10,000 pixels per frame"),
])
def test_unreadable_or_oversized_upload(client, files, tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(path)), SENTENCE, 0.5, 1, api_name="/segment")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    served(client, files)


def test_truncated_video_is_refused(client, files, tmp_path):
    whole = (files / "good.mp4").read_bytes()
    cut = write(tmp_path, "cut.mp4", whole[: len(whole) // 2])  # the index (moov) is at the end: gone
    with pytest.raises(AppError, match=r"^cut.mp4: cannot read video \(.*Invalid data found") as info:
        client.predict(handle_file(str(cut)), SENTENCE, 0.5, 1, api_name="/segment")
    assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)  # the server's path is not shown
    served(client, files)


def test_truncated_video_with_its_index_first_is_segmented_with_a_warning(client, files, tmp_path):
    import av

    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # the index before the frames
        stream = container.add_stream("libx264", rate=10)
        stream.pix_fmt, stream.options, stream.height, stream.width = "yuv444p", {"crf": "0"}, 48, 64
        for i in range(10):
            noise = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(noise, format="rgb24")))
        container.mux(stream.encode(None))
    data = whole.read_bytes()
    cut = write(tmp_path, "half.mp4", data[: len(data) * 6 // 10])
    *_, notes = client.predict(handle_file(str(cut)), SENTENCE, 0.5, 1, api_name="/segment")
    assert notes.startswith("5 frames at 64×48, 10 fps")
    assert "**Warning:** half.mp4: decoded 5 of the 10 frames it declares (truncated or damaged file?); the " \
           "missing frames are not segmented" in notes
    served(client, files)


def test_frames_over_the_size_limit(client, files, tmp_path):
    write_mp4(tmp_path / "large.mp4", clip_frames(2, (96, 128)), fps=10)
    refused(client, files, "large.mp4: declares frames of 128×96 (12,288 pixels), over the limit of 10,000 pixels "
            "per frame", handle_file(str(tmp_path / "large.mp4")), SENTENCE, 0.5, 1)


def test_too_many_frames(client, files, tmp_path):
    write_mp4(tmp_path / "many.mp4", clip_frames(20), fps=10)  # 2 s: within 3 s, over 12 frames
    refused(client, files, "many.mp4: 20 frames, over the limit of 12 frames", handle_file(str(tmp_path / "many.mp4")),
            SENTENCE, 0.5, 1)


def test_too_long(client, files, tmp_path):
    write_mp4(tmp_path / "slow.mp4", clip_frames(8), fps=2)  # 4 s
    refused(client, files, "slow.mp4: 4.0 s long, over the 3 s limit", handle_file(str(tmp_path / "slow.mp4")),
            SENTENCE, 0.5, 1)


@pytest.mark.parametrize("name, suffix", [("notes.txt", "'.txt'"), ("README", "'(none)'"), ("clip.avi", "'.avi'"),
                                          ("frame.png", "'.png'"), ("clip.mp4.exe", "'.exe'")])
def test_file_types_the_page_does_not_take(app, files, name, suffix):
    # raw upload (Gradio's client would refuse these itself), then a call naming the stored file
    uploaded = httpx.post(f"{app.url}gradio_api/upload", files={"files": (name, b"\0" * 64)}).json()[0]
    event, message = raw_call(app, [{"path": uploaded, "orig_name": name, "meta": {"_type": "gradio.FileData"}},
                                    SENTENCE, 0.5, 1])
    assert (event, message) == ("error", f"{name}: unsupported file type {suffix} ({TYPES})")


def test_upload_over_the_size_limit_is_not_stored(app, client, files):
    response = httpx.post(f"{app.url}gradio_api/upload",
                          files={"files": ("huge.mp4", b"\0" * math.ceil(0.25 * 1024 * 1024))})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    assert not list(app.workdir.rglob("huge.mp4"))
    served(client, files)


@pytest.mark.parametrize("name", ["../../evil.mp4", "..\\..\\evil.mp4", "/etc/evil.mp4", "sub/../../evil.mp4"])
def test_path_like_upload_names_stay_in_the_upload_folder(app, client, files, name):
    response = httpx.post(f"{app.url}gradio_api/upload", files={"files": (name, b"not a video" * 8, "video/mp4")})
    (stored,) = response.json()
    stored = Path(stored).resolve()
    assert stored.is_relative_to(app.workdir / "uploads") and stored.name.endswith("evil.mp4")
    event, message = raw_call(app, [{"path": str(stored), "orig_name": name, "meta": {"_type": "gradio.FileData"}},
                                    SENTENCE, 0.5, 1])
    assert event == "error" and message.startswith(f"{stored.name}: cannot read video (")
    assert str(app.workdir) not in message
    served(client, files)


def test_content_type_is_not_trusted(app, client, files):
    """A text file sent as video/mp4 is read for what it is; a real video sent as text/plain is segmented."""
    text = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("movie.mp4", b"hello" * 50, "video/mp4")})
    event, message = raw_call(app, [{"path": text.json()[0], "meta": {"_type": "gradio.FileData"}}, SENTENCE, 0.5, 1])
    assert event == "error" and message.startswith("movie.mp4: cannot read video (")
    video = httpx.post(f"{app.url}gradio_api/upload",
                       files={"files": ("good.mp4", (files / "good.mp4").read_bytes(), "text/plain")})
    event, outputs = raw_call(app, [{"path": video.json()[0], "meta": {"_type": "gradio.FileData"}}, SENTENCE, 0.5, 1])
    assert event == "complete" and outputs[-1].startswith("4 frames at 64×48")


def test_a_path_that_was_not_uploaded_is_not_read(app, client, files):
    outside = Path(__file__).resolve().parent / "media.py"  # exists, outside the app's folder
    for path in (outside, files / "good.mp4", Path("/etc/passwd"), app.workdir / "examples" / "../../../x.mp4"):
        event, message = raw_call(app, [{"path": str(path), "meta": {"_type": "gradio.FileData"}}, SENTENCE, 0.5, 1])
        expected = f"Cannot move {path.resolve()} to the gradio cache dir because it was not uploaded by a user."
        assert (event, message) == ("error", expected)
    served(client, files)


def test_no_video(client, files):
    refused(client, files, "no video: upload one (mp4, webm, mov, gif) or pick the example below", None, SENTENCE,
            0.5, 1)


# ---------------------------------------------------------------- sentences
@pytest.mark.parametrize("text, message", [
    ("", "no sentence: type one sentence per line describing the object to segment"),
    (" \n\t\n ", "no sentence: type one sentence per line describing the object to segment"),
    (".", "sentence 1: empty sentence '.' (no words); describe the object to segment"),
    (f"{SENTENCE}\n?!", "sentence 2: empty sentence '?!' (no words); describe the object to segment"),
    ("a\nb\nc\nd", "sentences: 4 lines, over the limit of 3 per request"),
    ("\n".join(["circle"] * 1000), "sentences: 1000 lines, over the limit of 3 per request"),
    ("x" * 10_001, "sentences: 10,001 characters, over the limit of 10,000 per request"),
    ("zebra galloping", "no word of 'zebra galloping' is in this model's vocabulary (39 words): 'zebra', 'galloping'"),
])
def test_sentences(client, files, text, message):
    refused(client, files, message, handle_file(str(files / "good.mp4")), text, 0.5, 1)


def upload(app, path: Path) -> dict:
    stored = httpx.post(f"{app.url}gradio_api/upload", files={"files": (path.name, path.read_bytes())}).json()[0]
    return {"path": stored, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("text, message", [
    (["a", "list"], "sentences: must be text, got list"),
    ({"a": 1}, "sentences: must be text, got dict"),
])
def test_sentence_that_is_not_text(app, client, files, text, message):
    assert raw_call(app, [upload(app, files / "good.mp4"), text, 0.5, 1]) == ("error", message)
    served(client, files)


@pytest.mark.parametrize("video, message", [
    ("abc", "video: expected an uploaded file, got str 'abc'"),
    (42, "video: expected an uploaded file, got int '42'"),
    ({"path": 5}, "video: expected an uploaded file, got dict \"{'path': 5}\""),
])
def test_video_that_is_not_a_file(app, client, files, video, message):
    assert raw_call(app, [video, SENTENCE, 0.5, 1]) == ("error", message)
    served(client, files)


# ---------------------------------------------------------------- slider values a client may send
@pytest.mark.parametrize("threshold, stride, message", [
    ("abc", 1, "threshold: must be a number in 0.05..0.95, got 'abc'"),
    (5.0, 1, "threshold: must be a number in 0.05..0.95, got 5.0"),
    (None, 1, "threshold: must be a number in 0.05..0.95, got None"),
    (True, 1, "threshold: must be a number in 0.05..0.95, got True"),
    (0.5, 0, "frame stride: must be a whole number in 1..10, got 0"),
    (0.5, 2.5, "frame stride: must be a whole number in 1..10, got 2.5"),
    (0.5, 1000, "frame stride: must be a whole number in 1..10, got 1000"),
    (0.5, "3", "frame stride: must be a whole number in 1..10, got '3'"),
])
def test_slider_values(client, files, threshold, stride, message):
    refused(client, files, message, handle_file(str(files / "good.mp4")), SENTENCE, threshold, stride)


# ---------------------------------------------------------------- bounded waiting
def test_a_full_queue_refuses_and_recovers(app, client, files):
    uploaded = httpx.post(f"{app.url}gradio_api/upload",
                          files={"files": ("good.mp4", (files / "good.mp4").read_bytes())}).json()[0]
    body = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, SENTENCE, 0.5, 1]}
    answers = [httpx.post(f"{app.url}gradio_api/call/segment", json=body, timeout=30) for _ in range(8)]
    full = [a for a in answers if a.status_code == 503]
    assert full and all("Queue is full. Max size is 2" in a.text for a in full)
    for accepted in (a for a in answers if a.status_code == 200):  # each accepted job finishes
        stream = httpx.get(f"{app.url}gradio_api/call/segment/{accepted.json()['event_id']}", timeout=60).text
        assert "event: complete" in stream
    served(client, files)


# ---------------------------------------------------------------- start-up
def test_port_in_use_is_one_line_before_loading(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--weights", "no-such-weights"]) == 2  # address first
    assert capsys.readouterr().err == (f"lbdt serve: error: --port {port}: already in use on 127.0.0.1 (another "
                                       "server listens there; choose another --port)\n")


def test_start_on_the_running_apps_port(app):
    port = int(app.url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(LBDTError, match=rf"^--port {port}: already in use on 127.0.0.1 \("):
        app.start("127.0.0.1", port)


@pytest.mark.parametrize("host, message", [
    ("192.0.2.1", ("--host 192.0.2.1: not an address of this machine (127.0.0.1: this machine only; 0.0.0.0: "
                   "every interface)")),
    ("", "--host: must be an address of this machine (127.0.0.1, 0.0.0.0, ...), got ''"),
    ("300.1.2.3", "--host 300.1.2.3: unknown host name or address ("),
])
def test_host_not_on_this_machine(capsys, host, message):
    assert main(["serve", "--host", host, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lbdt serve: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("port", [0, 65536, -1, 80.5, "7860", True])
def test_port_out_of_range_in_the_python_api(port):
    from lbdt.tools.serve import serve

    with pytest.raises(LBDTError, match=rf"^--port: must be a whole number in 1..65535, got {port!r}$"):
        serve(port=port)


@pytest.mark.parametrize("field, value, message", [
    ("max_upload_mb", math.inf, "--max-upload-mb: must be a finite number > 0, got inf"),
    ("max_upload_mb", math.nan, "--max-upload-mb: must be a finite number > 0, got nan"),
    ("max_seconds", -1, "--max-seconds: must be a finite number > 0, got -1"),
    ("max_seconds", "60", "--max-seconds: must be a finite number > 0, got '60'"),
    ("max_frames", 0, "--max-frames: must be a whole number >= 1, got 0"),
    ("max_frames", 2.5, "--max-frames: must be a whole number >= 1, got 2.5"),
    ("max_frame_pixels", True, "--max-frame-pixels: must be a whole number >= 1, got True"),
    ("max_sentences", None, "--max-sentences: must be a whole number >= 1, got None"),
    ("max_queue", -3, "--max-queue: must be a whole number >= 1, got -3"),
])
def test_bad_limits(field, value, message):
    from lbdt.tools.serve import Limits

    with pytest.raises(LBDTError) as info:
        Limits(**{field: value})
    assert str(info.value) == message


@pytest.mark.parametrize("option, value", [("--max-frames", "0"), ("--max-sentences", "many"),
                                           ("--max-upload-mb", "inf"), ("--port", "70000")])
def test_bad_limits_on_the_command_line(capsys, option, value):
    with pytest.raises(SystemExit) as info:
        main(["serve", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"lbdt serve: error: argument {option}: ") and err.count("\n") == 1


# ---------------------------------------------------------------- the video reader's size check (predict too)
def test_declared_size_is_refused_before_decoding_everywhere(tmp_path, capsys):
    gif = write(tmp_path, "bomb.gif", tiny_gif(14000, 14000))
    assert len(gif.read_bytes()) == 35
    with pytest.raises(LBDTError, match=r"bomb.gif: declares frames of 14000×14000 \(196,000,000 pixels\), over "
                                        r"the limit of 89,478,485 pixels per frame$"):
        open_video(gif)
    assert main(["predict", str(gif), "--text", SENTENCE, "--out", str(tmp_path / "out")]) == 2
    assert "bomb.gif: declares frames of 14000×14000" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    small = write(tmp_path, "small.gif", tiny_gif(4, 4))
    assert len(list(open_video(small, max_pixels=16))) == 1  # at the limit: read
    with pytest.raises(LBDTError, match=r"^max_pixels: must be a whole number >= 1, got 0$"):
        open_video(small, max_pixels=0)
