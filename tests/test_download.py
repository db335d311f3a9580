"""`lbdt download`: transfers from a loopback HTTP server (resumed, checksummed), `--from`, conversion,
installed names in `load_pretrained` / `lbdt predict`, model cards, honest run-time messages."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import media
from lbdt import registry
from lbdt.checkpoint import read_checkpoint
from lbdt.cli import main
from lbdt.download import install
from lbdt.errors import LBDTError
from lbdt.pretrained import card_of, load_pretrained
from lbdt.registry import installed, resolve_installed, word_table_cache
from lbdt.words import WordVectors
from test_pretrained import tiny_state

GLOVE_WORDS = ["the", ",", "man", "in", "red", "person", "left", "dog"]  # frequency order, as GloVe


def glove_text(words=GLOVE_WORDS, dim=300, seed=0) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(words), dim)).astype(np.float32).round(4)
    return "".join(f"{w} {' '.join(f'{x:.4f}' for x in v)}\n" for w, v in zip(words, vectors)), vectors


def glove_zip(path: Path, text: str) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("glove.test.300d.txt", text)
    return path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and honours `Range: bytes=N-` (206), as release servers do; records what was asked."""

    ranges: list[str | None]

    def do_GET(self):
        self.ranges.append(self.headers.get("Range"))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (RangeHandler,), {"ranges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler.ranges
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "lbdt_home"
    monkeypatch.setenv("LBDT_HOME", str(folder))
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stand_ins(monkeypatch, base: str, *, sha=None) -> None:
    """Replace the table's official-lbdt4 and glove-840b by small stand-ins served from `base` (the tiny variant
    in lbdt's format, verified by strict loading as the real one is; a 8-word 300-d GloVe zip)."""
    real = registry.KNOWN["official-lbdt4"]
    monkeypatch.setitem(registry.KNOWN, "official-lbdt4", replace(
        real, kind="lbdt", filename="tiny.pt", urls=(f"{base}/tiny.pt",), variant="tiny", sha256=sha,
        settings={"dataset": "a2d", "size": [64, 96], "frame_gap": 2, "max_words": 25}))
    monkeypatch.setitem(registry.KNOWN, "glove-840b", replace(
        registry.KNOWN["glove-840b"], filename="glove.test.zip", urls=(f"{base}/glove.test.zip",)))


def test_install_from_url_resumes_a_partial_transfer_and_converts(server, home, monkeypatch):
    root, base, ranges = server
    text, vectors = glove_text()
    data = glove_zip(root / "glove.test.zip", text).read_bytes()
    stand_ins(monkeypatch, base)
    part = home / "downloads" / "glove.test.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 2])  # a transfer cut halfway
    folder = install("glove-840b", progress=False)
    assert ranges == [f"bytes={len(data) // 2}-"]  # only the rest was asked for
    manifest = installed("glove-840b")
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["bytes"] == len(data)
    table = WordVectors.load_cache(folder / "glove-840b.vectors.npy")
    assert table.words == GLOVE_WORDS and table.vectors.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(table.vectors), vectors)
    assert list((home / "downloads").iterdir()) == []  # the raw download is gone once installed
    install("glove-840b", progress=False)  # installed already: nothing is fetched
    assert len(ranges) == 1
    install("glove-840b", progress=False, force=True)
    assert ranges[1:] == [None]  # fetched again, from the start


def test_wrong_checksum_is_refused_and_nothing_is_installed(server, home, monkeypatch):
    root, base, _ = server
    _, state = tiny_state(table=WordVectors.seeded(GLOVE_WORDS))
    torch.save(state, root / "tiny.pt")
    stand_ins(monkeypatch, base, sha="0" * 64)
    with pytest.raises(LBDTError, match=r"tiny.pt: checksum mismatch \(got sha256 [0-9a-f]{64}, expected 0000"):
        install("official-lbdt4", progress=False)
    assert installed("official-lbdt4") is None
    assert [p for p in home.rglob("*") if p.is_file()] == []  # not even the download is kept
    # the same file with its right checksum installs
    stand_ins(monkeypatch, base, sha=_sha(root / "tiny.pt"))
    install("official-lbdt4", progress=False)
    assert installed("official-lbdt4")["sha256"] == _sha(root / "tiny.pt")


def test_a_truncated_official_checkpoint_fails_strict_loading(tmp_path, home):
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 7, 7), "conv1_2.weight": torch.zeros(64, 3, 7, 7)},
               tmp_path / "broken.pth")
    with pytest.raises(LBDTError, match="not a known official LBDT state dict"):
        install("official-lbdt4", source=tmp_path / "broken.pth", progress=False)
    assert installed("official-lbdt4") is None and not (home / "official-lbdt4").exists()
    assert (tmp_path / "broken.pth").is_file()  # a --from file is never deleted
    assert not (home / "downloads").exists() or list((home / "downloads").iterdir()) == []


def test_small_glove_cache_keeps_the_most_frequent_words_in_fp16(tmp_path, home, capsys):
    text, vectors = glove_text()
    src = glove_zip(tmp_path / "glove.840B.300d.zip", text)
    assert main(["download", "glove-840b", "--from", str(src), "--max-words", "5", "--fp16", "--no-progress"]) == 0
    table = WordVectors.load_cache(home / "glove-840b" / "glove-840b.vectors.npy")
    assert table.words == GLOVE_WORDS[:5] and table.vectors.dtype == np.float16
    np.testing.assert_allclose(np.asarray(table.vectors, np.float32), vectors[:5], rtol=1e-3, atol=1e-3)
    assert table.lookup(["dog"]).abs().sum() == 0  # past the cut: unknown
    assert main(["download", "--list"]) == 0
    listed = capsys.readouterr().out
    assert f"installed: {home / 'glove-840b'}, 5 words, fp16" in listed and "official-lbdt4     not installed" in listed
    assert "https://drive.google.com/file/d/12mI2jUwW3MtpODv58jnywcuTCDhqa956" in listed


def test_torchvision_file_is_checked_against_its_name_prefix(tmp_path, home):
    (tmp_path / "resnet50-0676ba61.pth").write_bytes(b"not the torchvision file")
    with pytest.raises(LBDTError, match=r"expected 0676ba61\.\.\."):
        install("imagenet-resnet50", source=tmp_path / "resnet50-0676ba61.pth", progress=False)
    assert installed("imagenet-resnet50") is None


def test_installed_names_run_in_python_and_predict(server, home, monkeypatch, tmp_path, capsys):
    root, base, _ = server
    model, state = tiny_state(size=(64, 96), frame_gap=2)  # no word table inside: it comes from glove-840b
    torch.save(state, root / "tiny.pt")
    glove_zip(root / "glove.test.zip", glove_text()[0])
    stand_ins(monkeypatch, base)
    with pytest.raises(LBDTError, match="official-lbdt4 is not installed: run `lbdt download official-lbdt4`"):
        load_pretrained("official-lbdt4")
    assert main(["download", "official-lbdt4", "--no-progress"]) == 0
    assert main(["download", "glove-840b", "--from", f"{base}/glove.test.zip", "--no-progress"]) == 0
    ckpt = resolve_installed("official-lbdt4")
    assert word_table_cache("glove-840b") == home / "glove-840b" / "glove-840b.vectors.npy"
    stored = read_checkpoint(ckpt)
    assert stored["card"]["name"] == "official-lbdt4" and stored["word_table"] == "glove-840b"
    loaded = load_pretrained("official-lbdt4")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert (loaded.size, loaded.frame_gap, loaded.word_table) == ((64, 96), 2, "glove-840b")
    assert loaded.card["name"] == "official-lbdt4"
    from lbdt.predictor import VideoSegmenter

    assert VideoSegmenter.from_pretrained("official-lbdt4").size == (64, 96)
    video = tmp_path / "clip.mp4"
    media.write_mp4(video, [np.random.default_rng(t).integers(0, 256, (40, 56, 3), dtype=np.uint8) for t in range(4)])
    capsys.readouterr()
    assert main(["predict", str(video), "--text", "the man in red", "--weights", "official-lbdt4",
                 "--out", str(tmp_path / "out"), "--no-overlay"]) == 0
    masks = sorted((tmp_path / "out" / "00_the-man-in-red" / "masks").iterdir())
    assert len(masks) == 4 and Image.open(masks[0]).size == (56, 40)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sentences"][0]["unknown_words"] == [] and summary["model"]["size"] == [64, 96]
    assert "synthetic" not in capsys.readouterr().err  # no demonstration-model notice for real weights
    assert main(["info", "official-lbdt4"]) == 0
    card = capsys.readouterr().out
    assert "training_data: A2D-Sentences" in card and "mean_iou: 62.1" in card and "license: MIT" in card
    assert main(["info", str(ckpt)]) == 0  # the card stored in the converted checkpoint
    assert "name: official-lbdt4" in capsys.readouterr().out


def test_synthetic_tiny_on_a_real_sentence_says_what_it_is_and_names_unknown_words(tmp_path, capsys):
    video = tmp_path / "street.mp4"
    media.write_mp4(video, [np.full((48, 64, 3), 90 + 10 * t, np.uint8) for t in range(3)])
    assert main(["predict", str(video), "--text", "the person riding a bike", "--out", str(tmp_path / "o"),
                 "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "synthetic-tiny is a demonstration model trained only on lbdt's synthetic clips" in err
    assert "lbdt download official-lbdt4" in err
    assert "not in the model's vocabulary (zero vectors): person, riding, bike (60% of the sentence)" in err
    record = json.loads((tmp_path / "o" / "summary.json").read_text())["sentences"][0]
    assert record["unknown_words"] == ["person", "riding", "bike"] and record["unknown_fraction"] == 0.6
    if record["all_masks_empty"]:
        assert "every mask is empty (3 frames)" in err
    assert main(["predict", str(video), "--text", "person, bike", "--out", str(tmp_path / "o2")]) == 2
    assert "no word of 'person, bike' is in this model's vocabulary (39 words): 'person', ', ', 'bike'" in capsys.readouterr().err


def test_all_empty_masks_are_reported(tmp_path, capsys, monkeypatch):
    from lbdt.predictor import VideoSegmenter

    monkeypatch.setattr(VideoSegmenter, "__init__", _wrap_threshold(VideoSegmenter.__init__))
    video = tmp_path / "v.mp4"
    media.write_mp4(video, [np.full((48, 64, 3), 40, np.uint8) for _ in range(2)])
    assert main(["predict", str(video), "--text", "the red circle", "--out", str(tmp_path / "o"), "--no-overlay"]) == 0
    assert "'the red circle': every mask is empty (2 frames)" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["sentences"][0]["all_masks_empty"] is True


def _wrap_threshold(init):
    def patched(self, *args, **kwargs):  # threshold 1.0: prob > 1 never holds, so every mask is empty
        init(self, *args, **{**kwargs, "threshold": 1.0})
    return patched


def test_cards_exist_for_every_known_weight_with_the_required_fields():
    for name in [*registry.KNOWN, "synthetic-tiny"]:
        card = registry.load_card(name)
        assert card["name"] == name
        for key in ("training_data", "metrics", "input_size", "frame_gap", "word_table", "limitations", "license"):
            assert key in card, (name, key)
        assert "protocol" in card["metrics"], name
    with pytest.raises(LBDTError, match="no model card for 'nope'"):
        card_of("nope")


def test_glove_text_and_zip_give_the_same_table(tmp_path):
    text, _ = glove_text(dim=300)
    (tmp_path / "g.txt").write_text(text)
    a = WordVectors.from_glove(tmp_path / "g.txt")
    b = WordVectors.from_glove(glove_zip(tmp_path / "g.zip", text))
    assert a.words == b.words and np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a.txt", text)
        z.writestr("b.txt", text)
    with pytest.raises(LBDTError, match="two.zip: expected one .txt member in the GloVe zip, found 2"):
        WordVectors.from_glove(tmp_path / "two.zip")
    (tmp_path / "bad.txt").write_text("dog 1 2\n")
    with pytest.raises(LBDTError, match=r"bad.txt:1: expected a word and 300 numbers"):
        WordVectors.from_glove(tmp_path / "bad.txt")


@pytest.mark.slow
def test_real_shaped_official_checkpoint_installs_and_predicts(tmp_path, home, capsys):
    """The real entry: an LBDT-4 state dict with the official names and shapes, installed with --from, converted
    once, then `lbdt predict --weights official-lbdt4` with a GloVe zip stand-in."""
    from test_official import _random_official

    torch.save({"state_dict": _random_official("lbdt4")}, tmp_path / "a2d_lbdt4.pth")
    assert main(["download", "official-lbdt4", "--from", str(tmp_path / "a2d_lbdt4.pth"), "--no-progress"]) == 0
    assert main(["download", "glove-840b", "--from", str(glove_zip(tmp_path / "g.zip", glove_text()[0])),
                 "--no-progress"]) == 0
    video = tmp_path / "clip.mp4"
    media.write_mp4(video, [np.random.default_rng(t).integers(0, 256, (48, 64, 3), dtype=np.uint8) for t in range(3)])
    assert main(["predict", str(video), "--text", "the man in red", "--weights", "official-lbdt4",
                 "--out", str(tmp_path / "out"), "--no-overlay"]) == 0
    assert len(list((tmp_path / "out" / "00_the-man-in-red" / "masks").iterdir())) == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["size"] == [320, 320] and summary["model"]["frame_gap"] == 6
    assert main(["info", "official-lbdt4"]) == 0 and "LBDT-4" in capsys.readouterr().out


def test_demo_default_is_the_fixed_representative_clip_next_to_the_benchmark(tmp_path, capsys):
    from lbdt.demo import DEMO_SEED

    assert main(["demo", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["seed"] == DEMO_SEED and f"seed {DEMO_SEED}:" in printed
    assert summary["benchmark_motion_mean_iou"] == 0.616  # synthetic-tiny's card, from synthetic_learning.json
    assert "scores 0.616 mean IoU on the motion sentences" in printed
    assert f"mean IoU {summary['mean_iou']:.3f}" in printed
    assert main(["demo", "--out", str(tmp_path / "b"), "--seed", "random"]) == 0
    drawn = json.loads((tmp_path / "b" / "summary.json").read_text())["seed"]
    assert isinstance(drawn, int) and f"seed {drawn}:" in capsys.readouterr().out  # printed, so it can be re-run
    assert main(["demo", "--out", str(tmp_path / "c"), "--seed", "soon"]) == 2
    assert "--seed must be a non-negative integer or 'random', got 'soon'" in capsys.readouterr().err
