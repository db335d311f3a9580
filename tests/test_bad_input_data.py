"""Bad input on the data, evaluation and distributed surfaces (issue 21): `prepare-data davis|mevis`, the
Ref-DAVIS17 and MeViS sources, COCO RLEs, JSON readers, `validate-submission`, distributed set-up, the Python
API's path / sentence / video arguments, predict re-runs and resume.

CLI cases go through `check_error` (tests/test_bad_input.py): exit 2, one stderr line naming the input, no
traceback, nothing created outside the case's `out/`. API cases assert the `LBDTError` message (one line, naming
the argument) or, for graceful cases, the exact result.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbdt.cli import main
from lbdt.errors import LBDTError
from test_bad_input import ENV, _listing, _message_lines, _run_cli, check_error

H = W = 16
FRAMES = ["00000", "00001"]
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LBDT_DIST_TIMEOUT",
             "TORCHELASTIC_USE_AGENT_STORE")


@pytest.fixture
def d(tmp_path, monkeypatch):
    """The case's private folder, also the working directory (default outputs would land here)."""
    monkeypatch.chdir(tmp_path)
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def one_line(excinfo, *needles: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _jpg(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _index_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    index = np.zeros((H, W), np.uint8)
    index[2:6, 2:6] = 1
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.save(path)


def _rle(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


SQUARE = np.zeros((H, W), bool)
SQUARE[3:9, 4:10] = True


# ---------------------------------------------------------------- prepare-data davis
def davis_raw(d: Path, *, train: str = "car\n", val: str = "bike\n", annot1: str = 'car 1 "a red car"\nbike 1 "a bike"\n'):
    raw = d / "raw"
    for vid in ("car", "bike"):
        for f in FRAMES:
            _jpg(raw / "DAVIS" / "JPEGImages" / "480p" / vid / f"{f}.jpg")
            _index_png(raw / "DAVIS" / "Annotations_unsupervised" / "480p" / vid / f"{f}.png")
    sets = raw / "DAVIS" / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text(train)
    (sets / "val.txt").write_text(val)
    text = raw / "davis_text_annotations"
    text.mkdir()
    (text / "Davis17_annot1.txt").write_text(annot1)
    for name in ("Davis17_annot1_full_video.txt", "Davis17_annot2.txt", "Davis17_annot2_full_video.txt"):
        (text / name).write_text('bike 1 "the bike"\n', encoding="latin-1")
    return raw


def prepare(dataset: str, raw: Path, out: str = "out") -> list[str]:
    return ["prepare-data", dataset, "--raw", str(raw), "--out", out, "--no-progress"]


@pytest.mark.parametrize("train, val, needles", [
    ("../evil\n", "bike\n", ["train.txt:1", "video name '../evil' is not a plain name"]),
    ("car\n/abs\n", "bike\n", ["train.txt:2", "'/abs' is not a plain name"]),
    ("car ..\n", "bike\n", ["train.txt:1", "'..' is not a plain name"]),
    ("car\n", "bike car\n", ["val.txt:1", "video 'car' is also in the train list"]),
])
def test_prepare_davis_split_list_names(d, capsys, train, val, needles):
    raw = davis_raw(d, train=train, val=val)
    check_error(prepare("davis", raw), needles, d, capsys)
    assert not (d / "out").exists()  # refused before anything is written


def test_prepare_davis_split_list_not_utf8(d, capsys):
    raw = davis_raw(d, train="car\n")
    (raw / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_bytes(b"bike\n\xff\xfe\n")
    check_error(prepare("davis", raw), ["val.txt: not UTF-8 text", "at byte 5"], d, capsys)


@pytest.mark.parametrize("line, needles", [
    ('../../escape 1 "up two"', ["Davis17_annot1.txt:2", "video name '../../escape' is not a plain name"]),
    ('a\\b 1 "backslash"', ["Davis17_annot1.txt:2", "is not a plain name"]),
    ('bike 255 "void label"', ["Davis17_annot1.txt:2", "object id 255 is not in 1..254"]),
    ('bike 0 "zero"', ["Davis17_annot1.txt:2", "expected 'video obj_id"]),
])
def test_prepare_davis_expression_lines(d, capsys, line, needles):
    raw = davis_raw(d, annot1=f'car 1 "a red car"\n{line}\n')
    check_error(prepare("davis", raw), needles, d, capsys)
    assert not (d / "out").exists() and not (d / "escape").exists()


@pytest.mark.parametrize("args, needle", [
    (["--raw", "raw", "--out", ""], "--out: empty path"),
    (["--raw", "", "--out", "out"], "--raw: empty path"),
])
def test_prepare_davis_empty_paths(d, capsys, args, needle):
    davis_raw(d)
    before = _listing(d)
    check_error(["prepare-data", "davis", *args, "--no-progress"], [needle], d, capsys)
    assert _listing(d) == before  # not the current folder, not datasets/davis


@pytest.mark.parametrize("marker", ['{"frames": "00000"}', '{"frames": ["../x"]}', '[[[[', '{"frames": [7]}'])
def test_prepare_davis_damaged_marker_redoes_the_video(d, capsys, marker):
    from lbdt.data.sources import DAVISSource

    raw = davis_raw(d)
    assert main(prepare("davis", raw)) == 0
    path = d / "out" / ".prepare" / "davis" / "val" / "bike.json"
    path.write_text(marker)
    (d / "out" / "val" / "JPEGImages" / "bike" / "00001.jpg").unlink()
    capsys.readouterr()
    assert main(prepare("davis", raw)) == 0
    assert "reused finished videos from an earlier run: 1" in capsys.readouterr().out  # car reused, bike redone
    assert json.loads(path.read_text()) == {"frames": FRAMES}
    assert sorted(p.name for p in (d / "out" / "val" / "JPEGImages" / "bike").iterdir()) == ["00000.jpg", "00001.jpg"]
    assert len(DAVISSource(d / "out").records("val")) == 4 * 2  # 4 groups x 2 frames


# ---------------------------------------------------------------- prepare-data mevis
def mevis_raw(d: Path, *, masks=None, meta=None, frame_size=(H, W), split="valid_u") -> Path:
    raw = d / "mevis"
    for f in FRAMES:
        _jpg(raw / split / "JPEGImages" / "v" / f"{f}.jpg", *frame_size)
    meta = meta if meta is not None else {"videos": {"v": {"frames": FRAMES, "expressions": {
        "0": {"exp": "the square", "obj_id": [0], "anno_id": [0]}}}}}
    text = meta if isinstance(meta, (str, bytes)) else json.dumps(meta)
    getattr(raw / split / "meta_expressions.json", "write_bytes" if isinstance(text, bytes) else "write_text")(text)
    masks = masks if masks is not None else {"0": [_rle(SQUARE), None]}
    text = masks if isinstance(masks, (str, bytes)) else json.dumps(masks)
    getattr(raw / split / "mask_dict.json", "write_bytes" if isinstance(text, bytes) else "write_text")(text)
    return raw


NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("masks, meta, needles", [
    ({"0": [{"size": [H, W + 1], "counts": [0, H * (W + 1)]}, None]}, None,
     ["mask_dict.json: anno_id '0', frame 0", "RLE size (16, 17) (H, W) differs from its frame's (16, 16)"]),
    ({"0": [{"size": [-H, W], "counts": "0"}, None]}, None, ["anno_id '0', frame 0", "two positive integers"]),
    ({"0": [{"size": [H, True], "counts": "0"}, None]}, None, ["frame 0", "two positive integers"]),
    ({"0": [None, "RLE"]}, None, ["anno_id '0', frame 1: expected a COCO RLE object or null"]),
    ({"0": [None]}, None, ["anno_id '0'", "needs a list of 2 RLEs or nulls"]),
    (NESTED, None, ["mask_dict.json: malformed JSON (nested too deeply)"]),
    ('{"0": [null, null], "0": [null, null]}', None, ["mask_dict.json: malformed JSON (key '0' appears twice"]),
    (None, NESTED, ["meta_expressions.json: malformed JSON (nested too deeply)"]),
    (None, b'{"videos": {"v\xe9": {}}}', ["meta_expressions.json: not UTF-8 text"]),
    (None, {"videos": {"v": {"frames": ["../../x", "00001"], "expressions": {}}}}, ["'../../x' is not a plain name"]),
    (None, {"videos": {"v": {"frames": [], "expressions": {}}}}, ["video 'v': 'frames' is empty"]),
    (None, {"videos": {"v": {"frames": [0, 1], "expressions": {}}}}, ["frame name must be text, got int 0"]),
])
def test_prepare_mevis_checks_masks_against_frames(d, capsys, masks, meta, needles):
    raw = mevis_raw(d, masks=masks, meta=meta)
    check_error(prepare("mevis", raw), needles, d, capsys)
    assert not (d / "out").exists()


def test_prepare_mevis_empty_out(d, capsys):
    raw = mevis_raw(d)
    check_error(["prepare-data", "mevis", "--raw", str(raw), "--out", "", "--no-progress"], ["--out: empty path"], d,
                capsys)


# ---------------------------------------------------------------- sources: paths, RLEs, JSON
@pytest.mark.parametrize("root, needle", [
    ("", "mevis dataset root: empty path"),
    ("   ", "mevis dataset root: empty path"),
    (io.StringIO("x"), "mevis dataset root: expected a path (str or os.PathLike), got StringIO"),
    (42, "got int"),
    (b"mevis", "got bytes"),
])
def test_source_root_types(d, root, needle):
    from lbdt.data.sources import MeViSSource

    with pytest.raises(LBDTError) as e:
        MeViSSource(root)
    one_line(e, needle)


def test_davis_source_root_is_a_file_object(d):
    from lbdt.data.sources import DAVISSource

    (d / "root").mkdir()
    with open(d / "root" / "x", "w") as f, pytest.raises(LBDTError) as e:
        DAVISSource(f)
    one_line(e, "davis dataset root: expected a path", "TextIOWrapper")


@pytest.mark.parametrize("rle, needle", [
    ({"size": [H, W], "counts": [0, 10]}, "its runs cover 10 pixels; size 16x16 has 256"),
    ({"size": [H, W], "counts": [0, 300]}, "its runs cover 300 pixels"),
    ({"size": [H, W], "counts": [5, -3, 254]}, "list of non-negative integers"),
    ({"size": [H, W], "counts": "0\x7f"}, "character '\\x7f' in 'counts'"),
    ({"size": [H, W], "counts": "P"}, "'counts' ends inside a run length"),
    ({"size": [10**9, 10**9], "counts": "0"}, "RLE size (1000000000, 1000000000) (H, W) differs from its frame's (16, 16)"),
    ({"size": [H, 16.0], "counts": "0"}, "two positive integers"),
    ({"size": [H], "counts": "0"}, "two positive integers"),
    ({"counts": "0"}, "two positive integers, got None"),
])
def test_mevis_source_refuses_bad_rles(d, rle, needle):
    from lbdt.data.sources import MeViSSource

    source = MeViSSource(mevis_raw(d, masks={"0": [rle, None]}))
    records = source.records("valid_u")
    assert not source.read_mask(records[1]).any()  # frame 1: null RLE, the object is absent
    with pytest.raises(LBDTError) as e:
        source.read_mask(records[0])
    one_line(e, "mask_dict.json: anno_id '0', frame 0", needle)


def test_decode_rle_equals_pycocotools():
    from pycocotools import mask as mask_utils

    from lbdt.data.sources.mevis import decode_rle

    rng = np.random.default_rng(3)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)) < rng.random()
        if t % 4 == 0:  # long runs: counts over 31 need several 5-bit groups and the delta coding
            m = np.zeros((h, w), bool)
            m[int(rng.integers(0, h)):, : int(rng.integers(0, w + 1))] = True
        compressed = _rle(m)
        np.testing.assert_array_equal(decode_rle(compressed, "x", expected=(h, w)), m)
        np.testing.assert_array_equal(decode_rle(compressed, "x"), mask_utils.decode(
            {"size": [h, w], "counts": compressed["counts"].encode()}).astype(bool))
    # uncompressed counts, column-major, starting with background: 2 x 3 mask, runs 1 bg, 2 fg, 3 bg
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [1, 2, 3]}, "x"),
                                  np.array([[False, True, False], [True, False, False]]))


def test_davis_source_nested_meta(d):
    from lbdt.data.sources import DAVISSource

    (d / "r" / "val").mkdir(parents=True)
    (d / "r" / "val" / "meta_expressions.json").write_text('{"videos": ' + NESTED + "}")
    with pytest.raises(LBDTError) as e:
        DAVISSource(d / "r").records("val")
    one_line(e, "meta_expressions.json: malformed JSON (nested too deeply)")


# ---------------------------------------------------------------- validate-submission
def _meta(d: Path, videos=None) -> Path:
    path = d / "meta.json"
    videos = videos if videos is not None else {"v": {"frames": FRAMES, "expressions": {"0": {"exp": "x"}}}}
    path.write_text(json.dumps({"videos": videos}))
    return path


def _png_bytes(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def _validate(args: list[str], capsys) -> tuple[int, list[str]]:
    code, out, err = _run_cli(["validate-submission", *args], capsys)
    assert "Traceback" not in err and not _message_lines(err), err
    return code, out.splitlines()


@pytest.mark.parametrize("fmt, top", [("mevis", ""), ("ytvos", "Annotations/")])
def test_validate_submission_duplicated_entry(d, capsys, fmt, top):
    png = _png_bytes(SQUARE)
    names = [f"{top}v/0/{f}.png" for f in FRAMES]
    with pytest.warns(UserWarning, match="Duplicate name"):
        z = _zip(d / "sub.zip", [(names[0], png), (names[1], png), (names[1], _png_bytes(~SQUARE))])
    code, lines = _validate([str(z), "--meta", str(_meta(d)), "--format", fmt], capsys)
    assert code == 1
    assert lines == [f"duplicate: {names[1]} (2 entries of this name; the server reads one of them)",
                     f"{z}: 1 problem(s)"]


def test_validate_submission_corrupt_entry(d, capsys):
    png = _png_bytes(SQUARE)
    z = d / "sub.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as out:
        out.writestr("v/0/00000.png", png)
        out.writestr("v/0/00001.png", png)
    data = bytearray(z.read_bytes())
    at = data.index(png) + len(png) // 2  # inside the first entry's stored bytes: its CRC no longer matches
    data[at] ^= 0xFF
    z.write_bytes(bytes(data))
    code, lines = _validate([str(z), "--meta", str(_meta(d)), "--format", "mevis"], capsys)
    assert code == 1 and lines == ["malformed: v/0/00000.png: corrupt zip entry (BadZipFile)", f"{z}: 1 problem(s)"]


def test_validate_submission_truncated_frame(d, capsys):
    png = _png_bytes(SQUARE)
    z = _zip(d / "sub.zip", [(f"v/0/{f}.png", png) for f in FRAMES])
    images = d / "JPEGImages"
    _jpg(images / "v" / "00000.jpg")
    _jpg(images / "v" / "00001.jpg")
    (images / "v" / "00001.jpg").write_bytes((images / "v" / "00001.jpg").read_bytes()[:10])  # header cut
    check_error(["validate-submission", str(z), "--meta", str(_meta(d)), "--format", "mevis", "--images", str(images)],
                ["00001.jpg: unreadable frame (--images)"], d, capsys)


@pytest.mark.parametrize("meta, extra, needles", [
    ('{"videos": ' + NESTED + "}", [], ["meta.json: not valid JSON (nested too deeply)"]),
    ({"videos": {"../v": {"frames": FRAMES, "expressions": {}}}}, [], ["video id '../v' is not a plain name"]),
    ({"videos": {"v": {"frames": ["a/b"], "expressions": {}}}}, [], ["video 'v'", "frame name 'a/b' is not a plain"]),
    ({"videos": {"v": {"frames": FRAMES, "expressions": {"..": {}}}}}, [], ["expression id '..' is not a plain"]),
    (None, ["--images", ""], ["--images: empty path"]),
    (None, ["--test-meta", ""], ["--test-meta: empty path"]),
    (None, ["--test-meta", "missing.json"], ["missing.json: file not found (--test-meta)"]),
])
def test_validate_submission_bad_meta_and_options(d, capsys, meta, extra, needles):
    z = _zip(d / "sub.zip", [("v/0/00000.png", _png_bytes(SQUARE))])
    path = d / "meta.json"
    if meta is None:
        _meta(d)
    else:
        path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    check_error(["validate-submission", str(z), "--meta", str(path), "--format", "mevis", *extra], needles, d, capsys)


def test_validate_submission_meta_is_a_folder(d, capsys):
    z = _zip(d / "sub.zip", [("v/0/00000.png", _png_bytes(SQUARE))])
    (d / "meta").mkdir()
    check_error(["validate-submission", str(z), "--meta", str(d / "meta")], ["meta: file not found (--meta)"], d, capsys)


def test_validate_submission_api_types(d):
    from lbdt.evaluation.submission import validate_submission

    meta = _meta(d)
    with open(meta, "rb") as f, pytest.raises(LBDTError) as e:
        validate_submission(f, meta, fmt="mevis")
    one_line(e, "ZIP: expected a path (str or os.PathLike), got BufferedReader")
    with pytest.raises(LBDTError) as e:
        validate_submission(_zip(d / "s.zip", []), 3.5, fmt="mevis")
    one_line(e, "--meta: expected a path", "got float")


# ---------------------------------------------------------------- distributed set-up
def _evaluate_args(synth_roots) -> list[str]:
    return ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", str(synth_roots["a2d"]), "--split", "val",
            "--device", "cpu", "--no-progress", "--out", "out"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("env, needles", [
    ({"RANK": "1"}, ["RANK=1 is set but WORLD_SIZE is not", "unset RANK"]),
    ({"WORLD_SIZE": "two"}, ["environment variable WORLD_SIZE='two': expected an integer"]),
    ({"WORLD_SIZE": "0"}, ["WORLD_SIZE=0: must be >= 1"]),
    ({"WORLD_SIZE": "2", "RANK": "2"}, ["RANK=2 is not in [0, WORLD_SIZE=2)"]),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, ["RANK=-1: must be >= 0"]),
    ({"LOCAL_RANK": "x"}, ["LOCAL_RANK='x': expected an integer"]),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["MASTER_ADDR is not set (WORLD_SIZE=2)"]),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1"}, ["MASTER_PORT is not set"]),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"}, ["MASTER_PORT=99999: must be in [1, 65535]"]),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "LBDT_DIST_TIMEOUT": "soon"},
     ["LBDT_DIST_TIMEOUT='soon': expected a positive number of seconds"]),
])
def test_distributed_environment_is_checked(d, capsys, monkeypatch, synth_roots, env, needles):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    check_error(_evaluate_args(synth_roots), needles, d, capsys)
    assert not (d / "out" / "metrics.json").exists()


def test_distributed_port_in_use(d, capsys, monkeypatch, synth_roots):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))
        monkeypatch.setenv("LBDT_DIST_TIMEOUT", "5")
        started = time.monotonic()
        check_error(_evaluate_args(synth_roots), ["rank 0 of WORLD_SIZE=2", f"127.0.0.1:{port}", "cannot listen there"],
                    d, capsys)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("rank, needle", [("0", "rank 1 did not join within 2 s (LBDT_DIST_TIMEOUT)"),
                                          ("1", "cannot reach rank 0 within 2 s (LBDT_DIST_TIMEOUT)")])
def test_distributed_missing_peer_times_out(d, capsys, monkeypatch, synth_roots, rank, needle):
    for k, v in {"WORLD_SIZE": "2", "RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                 "LBDT_DIST_TIMEOUT": "2"}.items():
        monkeypatch.setenv(k, v)
    started = time.monotonic()
    check_error(_evaluate_args(synth_roots), [f"rank {rank} of WORLD_SIZE=2", needle], d, capsys)
    assert time.monotonic() - started < 30


def test_distributed_ranks_told_different_world_sizes(d, synth_roots):
    """Two `lbdt evaluate` processes, rank 0 told WORLD_SIZE=2 and rank 1 told 3: both stop with one line saying
    so as soon as they meet (not after the 600 s set-up timeout, nor torch's 30 minutes), and nothing is written."""
    port = _free_port()
    procs = []
    started = time.monotonic()
    try:
        for rank, world in ((0, 2), (1, 3)):
            env = {**ENV, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LBDT_DIST_TIMEOUT": "600"}
            env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
            procs.append(subprocess.Popen([sys.executable, "-m", "lbdt.cli", *_evaluate_args(synth_roots)], cwd=d,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.monotonic() - started
    for (rank, world), p, (_, err) in zip(((0, 2), (1, 3)), procs, results):
        lines = _message_lines(err)
        assert p.returncode == 2 and "Traceback" not in err and len(lines) == 1, (rank, err)
        assert lines[0].startswith("lbdt evaluate: error: distributed set-up")
        assert "the ranks disagree on WORLD_SIZE" in lines[0]
        assert f"rank {1 - rank} was told {(2, 3)[1 - rank]}, this rank {world}" in lines[0]
    assert elapsed < 300  # two process start-ups, then at once: the disagreement is seen, not waited out
    assert not (d / "out" / "metrics.json").exists()


# ---------------------------------------------------------------- Python API: paths, videos, sentences
@pytest.fixture(scope="module")
def segmenter():
    import torch

    from lbdt.predictor import VideoSegmenter

    torch.set_num_threads(1)
    return VideoSegmenter.from_pretrained("synthetic-tiny", device="cpu", precision="fp32", batch_size=2)


def _frames(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("video, needle", [
    ("", "video: empty path"),
    (b"clip.mp4", "video: unsupported input of type bytes"),
    (io.BytesIO(b"\x00" * 64), "video: unsupported input of type BytesIO"),
    ({"0": np.zeros((4, 4, 3), np.uint8)}, "video: unsupported input of type dict"),
    ({1, 2}, "video: unsupported input of type set"),
    (3.0, "unsupported video input of type float"),
])
def test_open_video_input_types(d, video, needle):
    from lbdt.data.video import open_video

    with pytest.raises(LBDTError) as e:
        open_video(video)
    one_line(e, needle)


def test_open_video_file_object(d):
    from lbdt.data.video import open_video

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "x.png")
    with open(d / "x.png", "rb") as f, pytest.raises(LBDTError) as e:
        open_video(f)
    one_line(e, "unsupported input of type BufferedReader", "pass the path")


def test_generator_video_consumed_twice(segmenter):
    frames = (f for f in _frames())
    first = [p.mask for p in segmenter.segment(frames, "the red circle")]
    assert len(first) == 3
    with pytest.raises(LBDTError) as e:
        list(segmenter.segment(frames, "the red circle"))
    one_line(e, "this generator of frames has already been read")


def test_generator_of_sentences_is_read_once(segmenter):
    sentences = ["the red circle", "the blue square"]
    from_list = list(segmenter.segment_many(_frames(), sentences))
    from_gen = list(segmenter.segment_many(_frames(), (s for s in sentences)))
    assert [len(p) for p in from_gen] == [2, 2, 2]  # every frame has both sentences' predictions
    for a, b in zip(from_list, from_gen):
        assert [p.meta.sentence for p in b] == sentences
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa.mask, pb.mask)


@pytest.mark.parametrize("sentences, needle", [
    ([], "sentences: no sentence given"),
    (iter([]), "sentences: no sentence given"),
    (["the circle", 7], "sentences: every sentence must be a string, got int 7"),
    (b"the circle", "sentences: expected a str or a sequence of str, got bytes"),
    (5, "got int"),
])
def test_segment_many_sentence_types(segmenter, sentences, needle):
    with pytest.raises(LBDTError) as e:
        segmenter.segment_many(_frames(), sentences)
    one_line(e, needle)


@pytest.mark.parametrize("name, kwargs, needle", [
    ("", {}, "VideoSegmenter.from_pretrained name: empty path"),
    (io.BytesIO(b"x"), {}, "VideoSegmenter.from_pretrained name: expected a path (str or os.PathLike), got BytesIO"),
    (None, {}, "got NoneType"),
    ("synthetic-tiny", {"word_vectors": ""}, "VideoSegmenter word_vectors: empty path"),
    ("synthetic-tiny", {"word_vectors": 3}, "VideoSegmenter word_vectors: expected a path"),
])
def test_video_segmenter_argument_types(d, name, kwargs, needle):
    from lbdt.predictor import VideoSegmenter

    with pytest.raises(LBDTError) as e:
        VideoSegmenter.from_pretrained(name, device="cpu", **kwargs)
    one_line(e, needle)


def test_video_segmenter_takes_a_loaded_model(d):
    from lbdt.predictor import VideoSegmenter

    with open(d / "w.pt", "wb") as f, pytest.raises(LBDTError) as e:
        VideoSegmenter(f)
    one_line(e, "VideoSegmenter takes a Runnable", "got BufferedWriter", "from_pretrained")


def test_predict_empty_out_and_one_string_sentence(d):
    from lbdt.predictor import predict_to_folder

    frames = np.stack(_frames(2))
    with pytest.raises(LBDTError) as e:
        predict_to_folder(frames, ["the red circle"], out_dir="", device="cpu", overlay=False, progress=False)
    one_line(e, "--out: empty path")
    assert list(d.iterdir()) == []
    summary = predict_to_folder(frames, "the red circle", out_dir=d / "out", device="cpu", overlay=False,
                                progress=False)
    assert [s["sentence"] for s in summary["sentences"]] == ["the red circle"]  # one sentence, not 14 characters
    assert sorted(p.name for p in (d / "out").iterdir()) == ["00_the-red-circle", "summary.json"]


def test_predict_rerun_after_100_sentences_leaves_no_stale_folders(d):
    from lbdt.predictor import predict_to_folder

    frames = np.stack(_frames(1))
    many = [f"the red circle {i}" for i in range(101)]
    first = predict_to_folder(frames, many, out_dir=d / "out", device="cpu", overlay=False, progress=False)
    assert len(first["sentences"]) == 101 and (d / "out" / "100_the-red-circle-100").is_dir()
    (d / "out" / "notes.txt").write_text("mine")  # not predict's: kept
    predict_to_folder(frames, ["the blue square"], out_dir=d / "out", device="cpu", overlay=False, progress=False)
    assert sorted(p.name for p in (d / "out").iterdir()) == ["00_the-blue-square", "notes.txt", "summary.json"]


# ---------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-step synthetic_tiny run (a2d format, 64 x 64): its overrides and output folder."""
    import torch

    from lbdt.config import load_config
    from lbdt.data.synth import write_benchmark
    from lbdt.engine.train import train

    base = tmp_path_factory.mktemp("resume")
    write_benchmark(base / "bench", fmt="a2d", seed=5, videos=(1, 1, 1), annotated=2, progress=False)
    overrides = [f"data.root={base / 'bench'}", f"train.output_dir={base / 'run'}", "data.size=[64,64]",
                 "data.num_workers=0", "train.max_steps=1", "data.val_split=", "train.epochs=2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config("synthetic_tiny", overrides))
    finally:
        torch.set_num_threads(threads)
    return overrides, base / "run"


@pytest.mark.parametrize("change, needle", [
    ("model.zero_temporal=true", "cannot resume with model.zero_temporal=True; the checkpoint used False"),
    ("data.max_words=12", "cannot resume with data.max_words=12; the checkpoint used 10"),
    ("data.frame_gap=2", "cannot resume with data.frame_gap=2; the checkpoint used None"),
])
def test_resume_refuses_a_different_model_or_input(trained, capsys, change, needle):
    overrides, run = trained
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    code, _, err = _run_cli(["train", "synthetic_tiny", *overrides, change, "--resume"], capsys)
    lines = _message_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(run / "last.pt") in lines[0] and needle in lines[0]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing rewritten
