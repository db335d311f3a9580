"""Bad input at every boundary (issue 10): every subcommand and the Python API.

Each CLI case runs `lbdt.cli.main([...])` in a private folder (also the working directory) and asserts: the
exit code, exactly one line on stderr that names the input, no traceback, and no file created outside the
case's output folder (`out/` under that folder). Graceful cases (grayscale, RGBA, 16-bit frames, a truncated
video) assert that the output is complete. The kill -9 tests run `lbdt` in a subprocess that SIGKILLs itself at
a named point (`LBDT_CRASH_AT`, lbdt.io.crash_point).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from lbdt.cli import main
from lbdt.errors import LBDTError

SRC = Path(__file__).resolve().parents[1] / "src"
SHIPPED = SRC / "lbdt" / "weights" / "synthetic_tiny.pt"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
PROGRESS = re.compile(r"\d+%\|")  # tqdm progress-bar lines share stderr with the message
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- harness
def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_lbdt(args: list[str], *, cwd: Path | None = None, crash_at: str | None = None):
    """`python -m lbdt.cli ARGS` in a subprocess; with `crash_at` it SIGKILLs itself at that crash point."""
    env = ENV if crash_at is None else {**ENV, "LBDT_CRASH_AT": crash_at}
    return subprocess.run([sys.executable, "-m", "lbdt.cli", *args], check=False, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _message_lines(err: str) -> list[str]:
    """stderr without tqdm progress bars (which share it, and may precede a message on the same line)."""
    lines = []
    for segment in re.split(r"[\r\n]", err):
        start = min((i for i in (segment.find("lbdt "), segment.find("lbdt:")) if i >= 0), default=-1)
        if start >= 0:
            lines.append(segment[start:])
        elif segment.strip() and "\x1b[" not in segment and not PROGRESS.search(segment):
            lines.append(segment)
    return lines


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_error(args: list[str], needles: list[str], d: Path, capsys, code: int = 2) -> str:
    """Run `lbdt args` in `d`; assert exit `code`, one stderr line naming every needle, no traceback, and
    nothing created in `d` outside `d/out`."""
    before = _listing(d)
    got, _, err = _run_cli(args, capsys)
    lines = _message_lines(err)
    assert got == code, (got, err)
    assert "Traceback" not in err
    # the notices a command prints before its work (issue 23: device, precision, demo model, words) may come first;
    # the error is one line, the last, and nothing else is printed
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(line.startswith("lbdt") for line in lines), err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    created = {p for p in _listing(d) - before if not (p == "out" or p.startswith("out" + os.sep))}
    assert not created, created
    return errors[0]


# ---------------------------------------------------------------- files the cases use
def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def frames_folder(d: Path, name: str = "frames", n: int = 3, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    shape = {"RGB": (24, 32, 3), "L": (24, 32), "RGBA": (24, 32, 4)}[mode]
    for i in range(n):
        png(d / name / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return d / name


def glove(d: Path, text: bytes, name: str = "glove.txt") -> Path:
    (d / name).write_bytes(text)
    return d / name


def vec_line(word: str, values) -> bytes:
    return (word + " " + " ".join(str(v) for v in values) + "\n").encode()


def a2d_copy(copy_benchmark) -> tuple[Path, str, str]:
    """(root, first test-list line's video, frame) of a private a2d copy."""
    root = copy_benchmark("a2d")
    first = (root / "val.txt").read_text().splitlines()[0]
    video, frame = first.split(",")[0].split("/")
    return root, video, frame


def edit_list(root: Path, name: str, line: str) -> None:
    """Replace the list's first line by `line`."""
    lines = (root / name).read_text().splitlines()
    (root / name).write_text("\n".join([line] + lines[1:]) + "\n")


def write_h5(path: Path, instance, remask) -> None:
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        f["instance"] = instance
        f["reMask"] = remask


def a2d_raw(d: Path, video_id: str = "vid1", clips: bool = True) -> Path:
    raw = d / "raw"
    (raw / "Release").mkdir(parents=True)
    (raw / "Release" / "videoset.csv").write_text(f"{video_id},1,2,3,4,5,6,0\n")
    (raw / "text_annotations" / "a2d_annotation_with_instances").mkdir(parents=True)
    (raw / "text_annotations" / "a2d_annotation.txt").write_text(f"video_id,instance_id,query\n{video_id},1,a man\n")
    if clips:
        (raw / "Release" / "clips320H").mkdir()
    return raw


def ytvos_raw(d: Path, video_id: str = "abc", frames: bool = True) -> Path:
    raw = d / "raw"
    (raw / "meta_expressions" / "train").mkdir(parents=True)
    meta = {"videos": {video_id: {"frames": ["00000"], "expressions": {"0": {"exp": "a cat", "obj_id": "1"}}}}}
    (raw / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps(meta))
    if frames:
        (raw / "train" / "JPEGImages").mkdir(parents=True)
        (raw / "train" / "Annotations").mkdir(parents=True)
    return raw


def official_meta(d: Path) -> Path:
    meta = {"videos": {"v1": {"frames": ["00000"], "expressions": {"0": {"exp": "a cat"}}}}}
    (d / "meta.json").write_text(json.dumps(meta))
    return d / "meta.json"


def submission(d: Path) -> Path:
    with zipfile.ZipFile(d / "sub.zip", "w") as z:
        buf = Image.fromarray(np.zeros((4, 4), np.uint8))
        buf.save(d / "m.png")
        z.write(d / "m.png", "Annotations/v1/0/00000.png")
    (d / "m.png").unlink()
    return d / "sub.zip"


def resume_ckpt(d: Path, **changes) -> Path:
    """A copy of the shipped checkpoint with training keys and `changes` (a corrupted training checkpoint)."""
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    state.update({"optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 1, "step": 1, "epoch_batches": 0,
                  "rng": {}, "best": None, "history": []}, **changes)
    torch.save(state, d / "train.pt")
    return d / "train.pt"


# ---------------------------------------------------------------- the CLI campaign
# (id, setup(d, copy_benchmark) -> dict of names for the args, args (str.format'ed), needles (formatted too))
def _none(d, cb):
    return {}


PREDICT = ["predict", "{d}/frames", "--text", "the red circle", "--out", "{d}/out", "--no-overlay"]


def _frames(d, cb):
    frames_folder(d)
    return {}


CASES = [
    # ---- predict: the video
    ("predict-missing-video", _none, ["predict", "{d}/nope.mp4", "--text", "a cat"], ["nope.mp4"]),
    ("predict-unsupported-type", lambda d, cb: (d / "x.txt").write_text("hi") and {},
     ["predict", "{d}/x.txt", "--text", "a cat"], ["x.txt", "unsupported"]),
    ("predict-empty-folder", lambda d, cb: (d / "empty").mkdir() or {},
     ["predict", "{d}/empty", "--text", "a cat"], ["empty", "zero frames"]),
    ("predict-corrupt-png", lambda d, cb: (frames_folder(d) / "001.png").write_bytes(b"not a png") and {},
     PREDICT, ["001.png"]),
    ("predict-zero-byte-png", lambda d, cb: (frames_folder(d) / "002.png").write_bytes(b"") and {},
     PREDICT, ["002.png"]),
    ("predict-garbage-mp4", lambda d, cb: (d / "g.mp4").write_bytes(b"\x00" * 300) and {},
     ["predict", "{d}/g.mp4", "--text", "a cat"], ["g.mp4"]),
    ("predict-empty-mp4", lambda d, cb: (d / "e.mp4").write_bytes(b"") and {},
     ["predict", "{d}/e.mp4", "--text", "a cat"], ["e.mp4"]),
    ("predict-duplicate-stems", lambda d, cb: png(frames_folder(d) / "000.jpg", np.zeros((24, 32, 3), np.uint8))
     and {}, PREDICT, ["frames", "000"]),
    ("predict-corrupt-image-file", lambda d, cb: (d / "one.jpg").write_bytes(b"\xff\xd8garbage") and {},
     ["predict", "{d}/one.jpg", "--text", "a cat", "--out", "{d}/out"], ["one.jpg"]),
    # ---- predict: the sentence and options
    ("predict-punctuation-sentence", _frames, ["predict", "{d}/frames", "--text", "?!", "--out", "{d}/out"], ["?!"]),
    ("predict-blank-sentence", _frames, ["predict", "{d}/frames", "--text", "  ", "--out", "{d}/out"],
     ["empty sentence"]),
    ("predict-second-sentence-empty", _frames,
     ["predict", "{d}/frames", "--text", "a cat", "--text", "...", "--out", "{d}/out"], ["'...'"]),
    ("predict-batch-size-0", _frames, PREDICT + ["--batch-size", "0"], ["--batch-size"]),
    ("predict-batch-size-text", _frames, PREDICT + ["--batch-size", "eight"], ["--batch-size"]),
    ("predict-frame-gap-negative", _frames, PREDICT + ["--frame-gap", "-3"], ["--frame-gap"]),
    ("predict-device-mps", _frames, PREDICT + ["--device", "mps"], ["--device", "mps"]),
    ("predict-device-typo", _frames, PREDICT + ["--device", "cuda:x"], ["--device"]),
    ("predict-precision-fp8", _frames, PREDICT + ["--precision", "fp8"], ["--precision"]),
    ("predict-out-is-file", lambda d, cb: frames_folder(d) and (d / "o").write_text("x") and {},
     ["predict", "{d}/frames", "--text", "a cat", "--out", "{d}/o"], ["--out", "not a folder"]),
    ("predict-out-under-file", lambda d, cb: frames_folder(d) and (d / "o").write_text("x") and {},
     ["predict", "{d}/frames", "--text", "a cat", "--out", "{d}/o/sub"], ["--out", "not a folder"]),
    ("predict-weights-missing", _frames, PREDICT + ["--weights", "{d}/none.pt"], ["none.pt"]),
    ("predict-weights-garbage", lambda d, cb: frames_folder(d) and (d / "w.pt").write_bytes(b"junk") and {},
     PREDICT + ["--weights", "{d}/w.pt"], ["w.pt"]),
    ("predict-glove-missing", _frames, PREDICT + ["--glove", "{d}/g.txt"], ["g.txt"]),
    ("predict-glove-not-utf8", lambda d, cb: frames_folder(d) and glove(
        d, vec_line("cat", [0.1] * 300) + b"caf\xe9 " + b"0.1 " * 299 + b"0.1\n") and {},
     PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt:2", "UTF-8"]),
    ("predict-glove-nan", lambda d, cb: frames_folder(d) and glove(d, vec_line("cat", ["nan"] + [0.1] * 299))
     and {}, PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt:1", "NaN"]),
    ("predict-glove-inf", lambda d, cb: frames_folder(d) and glove(
        d, vec_line("cat", [0.1] * 300) + vec_line("dog", [0.1] * 299 + ["1e50"])) and {},
     PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt:2"]),
    ("predict-glove-short-line", lambda d, cb: frames_folder(d) and glove(d, vec_line("cat", [0.1] * 7)) and {},
     PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt:1", "300"]),
    ("predict-glove-non-numeric", lambda d, cb: frames_folder(d) and glove(
        d, vec_line("cat", ["x"] * 300)) and {}, PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt:1"]),
    ("predict-glove-empty", lambda d, cb: frames_folder(d) and glove(d, b"\n\n") and {},
     PREDICT + ["--glove", "{d}/glove.txt"], ["glove.txt"]),
    ("predict-no-text", _frames, ["predict", "{d}/frames"], ["--text"]),
    # ---- evaluate: options (all refused before any work)
    *[(f"evaluate-{name}", _none,
       ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{d}", "--split", "val", *extra], [opt])
      for name, extra, opt in [
          ("threshold-5", ["--threshold", "5"], "--threshold"),
          ("threshold-negative", ["--threshold", "-0.1"], "--threshold"),
          ("threshold-nan", ["--threshold", "nan"], "--threshold"),
          ("batch-size-0", ["--batch-size", "0"], "--batch-size"),
          ("workers-negative", ["--workers", "-1"], "--workers"),
          ("size-zero", ["--size", "0", "0"], "--size"),
          ("size-not-multiple-of-32", ["--size", "100", "100"], "--size"),
          ("frame-gap-negative", ["--frame-gap", "-3"], "--frame-gap"),
          ("limit-zero", ["--limit", "0"], "--limit"),
          ("device-mps", ["--device", "mps"], "--device"),
          ("dataset-unknown", ["--dataset", "coco"], "--dataset"),
          ("protocol-unknown", ["--protocol", "mine"], "--protocol"),
          ("precision-unknown", ["--precision", "int8"], "--precision"),
      ]],
    ("evaluate-out-is-file", lambda d, cb: (d / "o").write_text("x") and {},
     ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{d}", "--split", "val", "--out", "{d}/o"],
     ["--out", "not a folder"]),
    ("evaluate-root-missing", _none,
     ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{d}/nope", "--split", "val"], ["nope"]),
    ("evaluate-split-missing", lambda d, cb: {"root": cb("a2d")},
     ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{root}", "--split", "nosuch"], ["nosuch.txt"]),
    ("evaluate-word-vectors-missing", lambda d, cb: {"root": cb("a2d")},
     ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{root}", "--split", "val",
      "--word-vectors", "{d}/wv.txt"], ["wv.txt"]),
]


def _a2d_line_case(name: str, line: str, needles: list[str]):
    """An evaluate case whose a2d val list starts with `line` ({v}, {f}: a real video and frame)."""

    def setup(d, cb):
        root, v, f = a2d_copy(cb)
        edit_list(root, "val.txt", line.format(v=v, f=f))
        return {"root": root}

    return (f"evaluate-list-{name}", setup,
            ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{root}", "--split", "val",
             "--out", "{d}/out", "--save-masks", "--no-progress"], ["val.txt:1", *needles])


def _a2d_file_case(name: str, change, needles: list[str]):
    """An evaluate case after `change(root, video, frame)` broke one of the first sample's files."""

    def setup(d, cb):
        root, v, f = a2d_copy(cb)
        change(root, v, f)
        return {"root": root}

    return (f"evaluate-{name}", setup,
            ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{root}", "--split", "val",
             "--out", "{d}/out", "--no-progress", "--no-coco"], needles)


def _mask(root, v, f):
    return root / "masks" / v / f"{f}.h5"


CASES += [
    _a2d_line_case("dotdot-video", "../../escape/{f},64,96,1,the red circle,x", ["video id", "'../../escape'"]),
    _a2d_line_case("absolute-video", "/tmp/x/{f},64,96,1,the red circle,x", ["video id"]),
    _a2d_line_case("dotdot-frame", "{v}/..,64,96,1,the red circle,x", ["frame id"]),
    _a2d_line_case("backslash-video", "a\\..\\b/{f},64,96,1,the red circle,x", ["video id"]),
    _a2d_line_case("dotdot-object", "{v}/{f},64,96,../x,the red circle,x", ["object id"]),
    _a2d_line_case("slash-object", "{v}/{f},64,96,1/2,the red circle,x", ["object id"]),
    _a2d_line_case("punctuation-sentence", "{v}/{f},64,96,1,?!,x", ["empty sentence"]),
    _a2d_line_case("zero-height", "{v}/{f},0,96,1,the red circle,x", ["orig_h"]),
    _a2d_line_case("text-width", "{v}/{f},64,wide,1,the red circle,x", ["orig_w"]),
    _a2d_line_case("missing-fields", "{v}/{f},64,96", ["expected 6"]),
    _a2d_line_case("no-frame", "{v},64,96,1,the red circle,x", ["<video>/<frame>"]),
    _a2d_line_case("empty-object", "{v}/{f},64,96, ,the red circle,x", ["object id"]),
    _a2d_line_case("size-not-the-frames", "{v}/{f},100000,100000,1,the red circle,x", ["100000x100000", "differs"]),
    _a2d_file_case("list-not-utf8", lambda r, v, f: (r / "val.txt").write_bytes(b"\xff\xfe" + (r / "val.txt")
                                                                              .read_bytes()), ["val.txt", "UTF-8"]),
    _a2d_file_case("mask-wrong-size", lambda r, v, f: write_h5(_mask(r, v, f), np.arange(4.0),
                                                             np.ones((4, 50, 40))),
                   ["masks", ".h5", "mask size"]),
    _a2d_file_case("mask-text-ids", lambda r, v, f: write_h5(_mask(r, v, f), np.array([b"one"]),
                                                           np.ones((96, 64))), [".h5", "instance ids"]),
    _a2d_file_case("mask-empty", lambda r, v, f: write_h5(_mask(r, v, f), np.zeros(0), np.zeros((0, 96, 64))),
                   [".h5", "empty"]),
    _a2d_file_case("mask-count-mismatch", lambda r, v, f: write_h5(_mask(r, v, f), [1.0, 2.0], np.ones((96, 64))),
                   [".h5", "instance ids"]),
    _a2d_file_case("mask-garbage", lambda r, v, f: _mask(r, v, f).write_bytes(b"not hdf5"), [".h5", "unreadable"]),
    _a2d_file_case("mask-missing", lambda r, v, f: _mask(r, v, f).unlink(), [".h5", "not found"]),
    _a2d_file_case("mask-nan-id", lambda r, v, f: write_h5(_mask(r, v, f), [np.nan], np.ones((96, 64))),
                   [".h5", "finite"]),
    _a2d_file_case("frame-corrupt", lambda r, v, f: (r / "images" / v / f"{f}.jpg").write_bytes(b"junk"),
                   [f"{os.sep}images{os.sep}", ".jpg"]),
    _a2d_file_case("frame-missing", lambda r, v, f: (r / "images" / v / f"{f}.jpg").unlink(),
                   [f"{os.sep}images{os.sep}", ".jpg"]),
    _a2d_file_case("frame-wrong-size", lambda r, v, f: png(r / "images" / v / f"{f}.jpg",
                                                          np.zeros((10, 10, 3), np.uint8)), ["differs"]),
]


def _ytvos_case(name: str, change, needles: list[str], split: str = "val"):
    def setup(d, cb):
        root = cb("ytvos")
        change(root)
        return {"root": root}

    return (f"evaluate-ytvos-{name}", setup,
            ["evaluate", "synthetic-tiny", "--dataset", "ytvos", "--root", "{root}", "--split", split,
             "--out", "{d}/out", "--no-progress", "--no-coco", "--save-masks"], needles)


def _ytvos_meta(root: Path, edit) -> None:
    meta = json.loads((root / "meta_expressions.json").read_text())
    edit(meta)
    (root / "meta_expressions.json").write_text(json.dumps(meta))


def _first_ytvos_mask(root: Path) -> Path:
    line = (root / "val.txt").read_text().splitlines()[0]
    key = line.split("~")[0]
    return root / "val" / "Annotations" / f"{key}.png"


CASES += [
    _ytvos_case("meta-not-json", lambda r: (r / "meta_expressions.json").write_text("{oops"),
                ["meta_expressions.json"]),
    _ytvos_case("meta-no-videos", lambda r: (r / "meta_expressions.json").write_text("[]"),
                ["meta_expressions.json"]),
    _ytvos_case("meta-expression-not-mapping", lambda r: _ytvos_meta(
        r, lambda m: next(iter(m["videos"].values())).update(expressions={"0": "a cat"})),
                ["meta_expressions.json", "mapping"]),
    _ytvos_case("mask-corrupt", lambda r: _first_ytvos_mask(r).write_bytes(b"junk"), [".png", "unreadable"]),
    _ytvos_case("mask-rgb", lambda r: png(_first_ytvos_mask(r), np.zeros((64, 96, 3), np.uint8)),
                [".png", "palette"]),
    _ytvos_case("list-dotdot", lambda r: edit_list(r, "val.txt", "../x/00000~64~96~1~a cat"), ["val.txt:1"]),
]
def _meta_escaping_id(root: Path) -> None:
    def edit(meta):
        for video in meta["videos"].values():
            video["expressions"] = {f"../../escape{i}": e for i, e in enumerate(video["expressions"].values())}

    _ytvos_meta(root, edit)


CASES += [
    _ytvos_case("meta-expression-id-escapes", _meta_escaping_id, ["expression id", "../../escape"]),
    # ---- evaluate: checkpoints
    ("evaluate-checkpoint-version-text", lambda d, cb: {"ck": resume_ckpt(d, version="1")},
     ["evaluate", "{ck}", "--dataset", "a2d", "--root", "{d}", "--split", "val"], ["train.pt"]),
    ("evaluate-checkpoint-garbage", lambda d, cb: (d / "c.pt").write_bytes(b"\x80\x04junk") and {},
     ["evaluate", "{d}/c.pt", "--dataset", "a2d", "--root", "{d}", "--split", "val"], ["c.pt"]),
    ("evaluate-checkpoint-missing", _none,
     ["evaluate", "{d}/none.pt", "--dataset", "a2d", "--root", "{d}", "--split", "val"], ["none.pt"]),
]

def _jhmdb_case(name: str, line: str, needles: list[str]):
    def setup(d, cb):
        root = cb("jhmdb")
        v = (root / "val.txt").read_text().split("/")[0]
        edit_list(root, "val.txt", line.format(v=v))
        return {"root": root}

    return (f"evaluate-jhmdb-{name}", setup,
            ["evaluate", "synthetic-tiny", "--dataset", "jhmdb", "--root", "{root}", "--split", "val",
             "--out", "{d}/out", "--no-progress", "--no-coco"], needles)


CASES += [
    _jhmdb_case("frame-not-a-number", "{v}/first,64,96,1,the red circle,x", ["first"]),
    _jhmdb_case("video-glob", "*/00002,64,96,1,the red circle,x", ["Rename_Images/*/*", "not found"]),
    _jhmdb_case("frame-beyond-masks", "{v}/00999,64,96,1,the red circle,x", ["00999"]),
]

TRAIN = ["train", "synthetic_tiny", "train.output_dir={d}/out", "data.root={d}/data"]
CASES += [
    *[(f"train-{item.split('=')[0]}-{i}", _none, TRAIN + [item], [item.split("=")[0]]) for i, item in enumerate([
        "train.lr=-0.001", "train.lr=0", "train.lr=nan", "train.lr=.inf", "train.batch_size=0",
        "train.grad_accum=0", "train.log_every=0", "train.epochs=-1", "train.epochs=0", "train.precision=fp8",
        "train.gamma=0", "train.weight_decay=-1", "train.milestones=[0]", "train.milestones=[5,3]",
        "train.clip_grad_norm=-1", "train.pos_weight=0", "train.seed=-1", "train.max_steps=0",
        "train.max_minutes=0", "train.checkpoint_every=0", "train.device=mps", "train.batch_size=2.5",
        "train.epochs=many", "data.size=[100,100]", "data.size=[0,0]", "data.size=[32]", "data.num_workers=-1",
        "data.max_words=0", "data.frame_gap=-1", "data.dataset=coco", "data.augment=maybe", "eval.threshold=2",
        "eval.batch_size=0", "eval.protocol=mine", "model.variant=",
    ])],
    ("train-both-loss-weights-zero", _none, TRAIN + ["train.bce_weight=0", "train.dice_weight=0"],
     ["bce_weight", "dice_weight"]),
    ("train-unknown-key", _none, TRAIN + ["train.learning_rate=1"], ["train.learning_rate"]),
    ("train-unknown-section", _none, TRAIN + ["optim.lr=1"], ["optim"]),
    ("train-override-without-equals", _none, TRAIN + ["train.lr"], ["train.lr"]),
    ("train-preset-missing", _none, ["train", "nosuchpreset"], ["nosuchpreset"]),
    ("train-yaml-invalid", lambda d, cb: (d / "c.yaml").write_text("train: [") and {}, ["train", "{d}/c.yaml"],
     ["c.yaml"]),
    ("train-yaml-not-utf8", lambda d, cb: (d / "c.yaml").write_bytes(b"train:\n  lr: 1 # \xff\n") and {},
     ["train", "{d}/c.yaml"], ["c.yaml", "UTF-8"]),
    ("train-yaml-list", lambda d, cb: (d / "c.yaml").write_text("- 1\n- 2\n") and {}, ["train", "{d}/c.yaml"],
     ["c.yaml"]),
    ("train-yaml-section-scalar", lambda d, cb: (d / "c.yaml").write_text("train: 5\n") and {},
     ["train", "{d}/c.yaml"], ["c.yaml", "train"]),
    ("train-output-dir-is-file", lambda d, cb: (d / "o").write_text("x") and {},
     ["train", "synthetic_tiny", "train.output_dir={d}/o"], ["train.output_dir", "not a folder"]),
    ("train-resume-missing", _none, TRAIN + ["--resume", "{d}/none.pt"], ["none.pt"]),
    ("train-resume-inference-only", _none, TRAIN + ["--resume", str(SHIPPED)], ["synthetic_tiny.pt",
                                                                                  "inference-only"]),
    ("train-resume-config-list", lambda d, cb: {"ck": resume_ckpt(d, config=[1, 2])}, TRAIN + ["--resume", "{ck}"],
     ["train.pt", "config"]),
    ("train-resume-version-text", lambda d, cb: {"ck": resume_ckpt(d, version="2")}, TRAIN + ["--resume", "{ck}"],
     ["train.pt", "version"]),
    ("train-resume-not-torch", lambda d, cb: (d / "t.pt").write_text("hello") and {},
     TRAIN + ["--resume", "{d}/t.pt"], ["t.pt"]),
    # ---- show-config
    *[(f"show-config-{i}", _none, ["show-config", "synthetic_tiny", item], [item.split("=")[0]])
      for i, item in enumerate(["train.lr=-1", "train.epochs=0", "eval.threshold=-0.5", "data.size=[33,64]",
                                "train.precision=fp64", "data.num_workers=x"])],
    ("show-config-preset-missing", _none, ["show-config", "nosuch"], ["nosuch"]),
    # ---- info / convert-official
    ("info-words-negative", _none, ["info", "tiny", "--words", "-1"], ["--words"]),
    ("info-words-zero", _none, ["info", "tiny", "--words", "0"], ["--words"]),
    ("info-size-zero", _none, ["info", "tiny", "--size", "0", "0"], ["--size"]),
    ("info-size-odd", _none, ["info", "tiny", "--size", "33", "32"], ["--size", "32"]),
    ("info-unknown-model", _none, ["info", "lbdt9"], ["lbdt9"]),
    ("convert-missing", _none, ["convert-official", "{d}/no.pth", "{d}/out/x.pt"], ["no.pth"]),
    ("convert-garbage", lambda d, cb: (d / "g.pth").write_bytes(b"junk") and {},
     ["convert-official", "{d}/g.pth", "{d}/out/x.pt"], ["g.pth"]),
    ("convert-folder", lambda d, cb: (d / "f.pth").mkdir() or {}, ["convert-official", "{d}/f.pth", "{d}/out/x.pt"],
     ["f.pth"]),
    ("convert-dst-is-folder", lambda d, cb: (d / "dst").mkdir() or {}, ["convert-official", str(SHIPPED), "{d}/dst"],
     ["OUT.pt", "folder"]),
    ("convert-ours-not-official", _none, ["convert-official", str(SHIPPED), "{d}/out/x.pt"], ["synthetic_tiny.pt"]),
    # ---- prepare-data
    ("prepare-a2d-raw-missing", _none, ["prepare-data", "a2d", "--raw", "{d}/raw", "--out", "{d}/out"], ["raw"]),
    ("prepare-a2d-no-clips-folder", lambda d, cb: a2d_raw(d, clips=False) and {},
     ["prepare-data", "a2d", "--raw", "{d}/raw", "--out", "{d}/out", "--no-progress"], ["clips320H"]),
    ("prepare-a2d-video-id-escapes", lambda d, cb: a2d_raw(d, "../../evil") and {},
     ["prepare-data", "a2d", "--raw", "{d}/raw", "--out", "{d}/out", "--no-progress"],
     ["a2d_annotation.txt:2", "video id"]),
    ("prepare-jhmdb-no-frames-folder", lambda d, cb: (d / "raw").mkdir() or (d / "raw" / "jhmdb_annotation.txt")
     .write_text("video_id,query\nv1,a man\n") and {},
     ["prepare-data", "jhmdb", "--raw", "{d}/raw", "--out", "{d}/out", "--no-progress"], ["Rename_Images"]),
    ("prepare-ytvos-no-frames-folder", lambda d, cb: ytvos_raw(d, frames=False) and {},
     ["prepare-data", "ytvos", "--raw", "{d}/raw", "--out", "{d}/out", "--no-progress"], ["JPEGImages"]),
    ("prepare-ytvos-video-id-escapes", lambda d, cb: ytvos_raw(d, "../../evil") and {},
     ["prepare-data", "ytvos", "--raw", "{d}/raw", "--out", "{d}/out", "--no-progress"],
     ["meta_expressions.json", "video id"]),
    ("prepare-jpeg-quality-0", _none, ["prepare-data", "a2d", "--raw", "{d}", "--jpeg-quality", "0"],
     ["--jpeg-quality"]),
    ("prepare-jpeg-quality-101", _none, ["prepare-data", "a2d", "--raw", "{d}", "--jpeg-quality", "101"],
     ["--jpeg-quality"]),
    ("prepare-frames-per-video-0", _none, ["prepare-data", "jhmdb", "--raw", "{d}", "--frames-per-video", "0"],
     ["--frames-per-video"]),
    ("prepare-val-fraction-1", _none, ["prepare-data", "ytvos", "--raw", "{d}", "--val-fraction", "1"],
     ["--val-fraction"]),
    ("prepare-val-fraction-negative", _none, ["prepare-data", "ytvos", "--raw", "{d}", "--val-fraction", "-0.1"],
     ["--val-fraction"]),
    ("prepare-seed-negative", _none, ["prepare-data", "jhmdb", "--raw", "{d}", "--seed", "-1"], ["--seed"]),
    ("prepare-out-is-file", lambda d, cb: a2d_raw(d) and (d / "o").write_text("x") and {},
     ["prepare-data", "a2d", "--raw", "{d}/raw", "--out", "{d}/o"], ["--out", "not a folder"]),
    ("prepare-unknown-dataset", _none, ["prepare-data", "coco", "--raw", "{d}"], ["coco"]),
    # ---- synth
    ("synth-frames-0", _none, ["synth", "--out", "{d}/out", "--frames", "0"], ["--frames"]),
    ("synth-videos-negative", _none, ["synth", "--out", "{d}/out", "--videos", "-1", "0", "0"], ["--videos"]),
    ("synth-no-videos", _none, ["synth", "--out", "{d}/out", "--videos", "0", "0", "0"], ["--videos"]),
    ("synth-size-huge", _none, ["synth", "--out", "{d}/out", "--size", "100000", "100000"], ["--size"]),
    ("info-size-huge", _none, ["info", "tiny", "--size", "32000", "32000"], ["--size"]),
    ("synth-size-zero", _none, ["synth", "--out", "{d}/out", "--size", "0", "0"], ["--size"]),
    ("synth-annotated-0", _none, ["synth", "--out", "{d}/out", "--annotated", "0"], ["--annotated"]),
    ("synth-seed-negative", _none, ["synth", "--out", "{d}/out", "--seed", "-1"], ["--seed"]),
    ("synth-format-unknown", _none, ["synth", "--out", "{d}/out", "--format", "coco"], ["--format"]),
    ("synth-out-is-file", lambda d, cb: (d / "o").write_text("x") and {}, ["synth", "--out", "{d}/o"],
     ["--out", "not a folder"]),
    ("synth-out-not-empty", lambda d, cb: (d / "out").mkdir() or (d / "out" / "keep").write_text("x") and {},
     ["synth", "--out", "{d}/out", "--no-progress"], ["out", "already exists"]),
    ("synth-does-not-fit", _none, ["synth", "--out", "{d}/out", "--frames", "400", "--size", "8", "8",
                                   "--videos", "1", "0", "0", "--no-progress"], ["--frames", "do not fit"]),
    # ---- validate-submission
    ("submission-zip-missing", lambda d, cb: official_meta(d) and {},
     ["validate-submission", "{d}/none.zip", "--meta", "{d}/meta.json"], ["none.zip"]),
    ("submission-meta-missing", lambda d, cb: submission(d) and {},
     ["validate-submission", "{d}/sub.zip", "--meta", "{d}/none.json"], ["none.json"]),
    ("submission-meta-not-json", lambda d, cb: submission(d) and (d / "m.json").write_text("{x") and {},
     ["validate-submission", "{d}/sub.zip", "--meta", "{d}/m.json"], ["m.json"]),
    ("submission-meta-wrong-shape", lambda d, cb: submission(d) and (d / "m.json").write_text('{"videos": 3}') and {},
     ["validate-submission", "{d}/sub.zip", "--meta", "{d}/m.json"], ["m.json"]),
    ("submission-images-missing", lambda d, cb: submission(d) and official_meta(d) and {},
     ["validate-submission", "{d}/sub.zip", "--meta", "{d}/meta.json", "--images", "{d}/JPEGImages"],
     ["JPEGImages", "--images"]),
    # ---- benchmark (all refused before any measurement)
    *[(f"benchmark-{name}", _none, ["benchmark", "--model", "tiny", *extra], [opt]) for name, extra, opt in [
        ("size-zero", ["--size", "0", "0"], "--size"), ("size-odd", ["--size", "64", "65"], "--size"),
        ("batch-zero", ["--batch", "0"], "--batch"), ("batch-text", ["--batch", "1,a"], "--batch"),
        ("batch-empty-item", ["--batch", "1,,2"], "--batch"), ("precision-unknown", ["--precision", "fp8"], "--precision"),
        ("precision-empty", ["--precision", ","], "--precision"), ("repeats-zero", ["--repeats", "0"], "--repeats"),
        ("frames-negative", ["--frames", "-1"], "--frames"), ("threads-zero", ["--threads", "0"], "--threads"),
        ("train-batch-zero", ["--train-batch", "0"], "--train-batch"), ("device-mps", ["--device", "mps"], "--device"),
    ]],
    ("benchmark-out-is-folder", lambda d, cb: (d / "res").mkdir() or {},
     ["benchmark", "--model", "tiny", "--out", "{d}/res"], ["--out", "folder"]),
    ("benchmark-out-under-file", lambda d, cb: (d / "f").write_text("x") and {},
     ["benchmark", "--model", "tiny", "--out", "{d}/f/r.json"], ["--out", "not a folder"]),
    # ---- demo
    ("demo-seed-negative", _none, ["demo", "--out", "{d}/out", "--seed", "-1"], ["--seed"]),
    ("demo-device-mps", _none, ["demo", "--out", "{d}/out", "--device", "mps"], ["--device"]),
    ("demo-out-is-file", lambda d, cb: (d / "o").write_text("x") and {}, ["demo", "--out", "{d}/o"],
     ["--out", "not a folder"]),
    ("demo-weights-missing", _none, ["demo", "--out", "{d}/out", "--weights", "{d}/none.pt"], ["none.pt"]),
    # ---- the command itself
    ("unknown-subcommand", _none, ["fly"], ["fly"]),
]
if not torch.cuda.is_available():
    CASES += [
        ("predict-device-cuda-without-cuda", _frames, PREDICT + ["--device", "cuda"], ["--device", "CUDA"]),
        ("evaluate-device-cuda-without-cuda", _none,
         ["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", "{d}", "--split", "val", "--device", "cuda"],
         ["--device", "CUDA"]),
    ]


@pytest.mark.parametrize("name,setup,args,needles", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input(name, setup, args, needles, tmp_path, capsys, copy_benchmark, monkeypatch):
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)  # default output folders land here too, where the listing sees them
    names = {"d": d, **(setup(d, copy_benchmark) or {})}
    check_error([a.format(**names) for a in args], [n.format(**names) for n in needles], d, capsys)


@pytest.mark.skipif(IS_ROOT, reason="root may write into read-only folders")
@pytest.mark.parametrize("command", [["predict", "{d}/frames", "--text", "a cat"], ["synth"], ["demo"]])
def test_output_folder_not_writable(command, tmp_path, capsys, monkeypatch):
    d = tmp_path / "case"
    d.mkdir()
    frames_folder(d)
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    monkeypatch.chdir(d)
    try:
        check_error([a.format(d=d) for a in command] + ["--out", f"{d}/ro/out"], ["--out", "not writable"], d, capsys)
    finally:
        (d / "ro").chmod(0o755)


def test_decompression_bomb_in_a_dataset_is_one_line(copy_benchmark, tmp_path, capsys, monkeypatch):
    """A frame over PIL's pixel limit inside a dataset: the dataset reader names it (as predict does)."""
    from PIL import Image as PILImage

    root, _, _ = a2d_copy(copy_benchmark)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 64x96 frames exceed 2 x 1000 pixels
    d = tmp_path / "case"
    d.mkdir()
    check_error(["evaluate", "synthetic-tiny", "--dataset", "a2d", "--root", str(root), "--split", "val",
                 "--out", f"{d}/out", "--no-progress"], [".jpg", "DecompressionBomb"], d, capsys)


def test_decompression_bomb_in_predict_is_one_line(tmp_path, capsys, monkeypatch):
    from PIL import Image as PILImage

    d = tmp_path / "case"
    d.mkdir()
    frames_folder(d)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 200)  # 24x32 frames exceed 2 x 200 pixels
    check_error([a.format(d=d) for a in PREDICT], ["000.png", "DecompressionBomb"], d, capsys)


def test_errors_through_a_subprocess_are_one_line(tmp_path):
    """The installed entry point (python -m lbdt.cli): one line on stderr, exit 2, for argument, config and
    file errors alike."""
    (tmp_path / "l.txt").write_text("hi")
    for args, needle in [(["evaluate", "x", "--dataset", "a2d", "--root", ".", "--split", "v", "--threshold", "5"],
                          "--threshold"),
                         (["show-config", "synthetic_tiny", "train.batch_size=0"], "train.batch_size"),
                         (["predict", str(tmp_path / "l.txt"), "--text", "a cat"], "l.txt")]:
        r = _run_lbdt(args, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------- graceful inputs: complete output
def _predict_ok(d: Path, video: Path, capsys, *extra: str) -> tuple[dict, str]:
    code, _, err = _run_cli(["predict", str(video), "--text", "the red circle", "--out", str(d / "out"),
                             "--no-overlay", *extra], capsys)
    assert code == 0, err
    summary = json.loads((d / "out" / "summary.json").read_text())
    masks = sorted((d / "out" / summary["sentences"][0]["masks"]).iterdir())
    assert [m.stem for m in masks] == sorted(summary["frame_ids"]) and len(masks) == summary["frames"]
    assert not (d / "out" / "INCOMPLETE").exists()
    assert not [p for p in (d / "out").rglob(".*")], "temporary files left"
    return summary, err


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_frames_give_complete_output(mode, tmp_path, capsys):
    folder = frames_folder(tmp_path, mode=mode, n=4)
    summary, _ = _predict_ok(tmp_path, folder, capsys)
    assert summary["frames"] == 4 and summary["original_sizes"] == [[24, 32]] and summary["frames_missing"] == 0


def test_16_bit_frames_are_scaled_not_clipped(tmp_path, capsys):
    from lbdt.data.video import open_video

    values = np.linspace(0, 65535, 24 * 32).reshape(24, 32).astype(np.uint16)
    png(tmp_path / "f16" / "0.png", values)
    frame = next(iter(open_video(tmp_path / "f16"))).image
    expected = np.floor(values / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    assert np.array_equal(frame[:, :, 0], expected) and np.array_equal(frame[:, :, 2], expected)
    assert frame.min() == 0 and frame.max() == 255 and len(np.unique(frame)) > 200  # not clipped to white
    summary, _ = _predict_ok(tmp_path, tmp_path / "f16", capsys)
    assert summary["frames"] == 1


def _faststart_mp4(path: Path, n: int = 20) -> None:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=10)
        s.pix_fmt, s.height, s.width = "yuv420p", 32, 32
        for _ in range(n):
            for packet in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                                              format="rgb24")):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)


def test_truncated_video_is_kept_with_a_warning_and_a_summary_field(tmp_path, capsys):
    """An mp4 cut after its index declares 20 frames and decodes fewer: kept, one warning line on stderr, and
    summary.json says how many are missing (documented in lbdt.data.video)."""
    full = tmp_path / "full.mp4"
    _faststart_mp4(full)
    data = full.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    summary, err = _predict_ok(tmp_path, tmp_path / "cut.mp4", capsys)
    assert summary["frames_declared"] == 20 and 0 < summary["frames"] < 20
    assert summary["frames_missing"] == 20 - summary["frames"]
    warnings = [line for line in _message_lines(err)  # the busy-machine notice depends on the test machine's load
                if "warning" in line and "machine is busy" not in line]
    assert len(warnings) == 1 and "cut.mp4" in warnings[0] and f"{summary['frames']} of the 20" in warnings[0]


def test_rerun_replaces_the_previous_result_whole(tmp_path, capsys):
    """A longer run, then a shorter one with another sentence into the same folder: only the new result remains
    (other files in the folder are left alone)."""
    frames_folder(tmp_path, "long", n=5)
    frames_folder(tmp_path, "short", n=2)
    code, _, err = _run_cli(["predict", str(tmp_path / "long"), "--text", "a cat", "--text", "a dog",
                             "--out", str(tmp_path / "out"), "--no-overlay"], capsys)
    assert code == 0, err
    (tmp_path / "out" / "notes.txt").write_text("mine")
    summary, _ = _predict_ok(tmp_path, tmp_path / "short", capsys)
    entries = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert entries == ["00_the-red-circle", "notes.txt", "summary.json"]
    assert summary["frames"] == 2


# ---------------------------------------------------------------- kill -9
def test_predict_killed_while_writing_is_visibly_incomplete_and_next_run_is_correct(tmp_path):
    folder = frames_folder(tmp_path, n=6)
    out = tmp_path / "out"
    args = ["predict", str(folder), "--text", "the red circle", "--out", str(out), "--batch-size", "2"]
    r = _run_lbdt(args, crash_at="predict-frame")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (out / "INCOMPLETE").is_file() and not (out / "summary.json").exists()
    assert len(list(out.glob("00_*/masks/*.png"))) == 1  # killed after the first mask
    r = _run_lbdt(args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6 and not (out / "INCOMPLETE").exists()
    assert sorted(p.stem for p in out.glob("00_*/masks/*.png")) == sorted(summary["frame_ids"])
    assert not [p for p in out.rglob(".*")]  # no temporary file of the killed run is left


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> Path:
    from lbdt.data.synth import write_benchmark

    root = tmp_path_factory.mktemp("bench") / "a2d"
    write_benchmark(root, fmt="a2d", seed=5, videos=(1, 1, 0), annotated=2, frames=8, size=(32, 32), progress=False)
    return root


def test_train_unknown_best_metric_is_an_error_not_a_silent_no_best(tiny_bench, tmp_path, capsys):
    d = tmp_path / "case"
    d.mkdir()
    check_error(["train", "synthetic_tiny", f"data.root={tiny_bench}", f"train.output_dir={d}/out", "data.size=[32,32]",
                 "data.num_workers=0", "train.epochs=1", "train.batch_size=8", "train.best_metric=accuracy"],
                ["train.best_metric", "accuracy", "mean_iou"], d, capsys)


def test_train_killed_during_best_copy_resume_repairs_best(tiny_bench, tmp_path):
    """SIGKILL while `last.pt` is copied to `best.pt`: `--resume` puts the reported best epoch's weights in
    `best.pt`; a stale `best.pt` is repaired the same way."""
    from lbdt.checkpoint import read_checkpoint as load_checkpoint

    out = tmp_path / "run"
    args = ["train", "synthetic_tiny", f"data.root={tiny_bench}",
            f"train.output_dir={out}", "data.size=[32,32]", "data.num_workers=0", "train.epochs=1",
            "train.batch_size=8", "data.val_split=val"]
    r = _run_lbdt(args, crash_at="best-copy")
    assert r.returncode == -signal.SIGKILL, r.stderr
    last = load_checkpoint(out / "last.pt")
    assert last["best"]["epoch"] == 1 and not (out / "best.pt").exists()
    r = _run_lbdt([*args, "--resume"])
    assert r.returncode == 0, r.stderr
    assert "best" in r.stdout and "at epoch 1" in r.stdout

    def check_best():
        best = load_checkpoint(out / "best.pt")
        assert best["epoch"] == last["best"]["epoch"]
        assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
        assert not list(out.glob(".*.tmp"))

    check_best()
    stale = dict(last, epoch=0, model={k: torch.zeros_like(v) for k, v in last["model"].items()})
    torch.save(stale, out / "best.pt")
    r = _run_lbdt([*args, "--resume"])
    assert r.returncode == 0, r.stderr
    check_best()


# ---------------------------------------------------------------- the Python API
@pytest.fixture(scope="module")
def segmenter():
    from lbdt.predictor import VideoSegmenter

    return VideoSegmenter.from_pretrained("synthetic-tiny", batch_size=2)


def _frames_u8(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 24, 32, 3), dtype=np.uint8)


def _api_cases():
    from lbdt.data.sources import A2DSource
    from lbdt.data.video import open_video, to_rgb
    from lbdt.evaluation import metrics
    from lbdt.evaluation.writers import PngMaskWriter, SubmissionWriter
    from lbdt.predictor import VideoSegmenter
    from lbdt.types import SampleMeta
    from lbdt.words import WordVectors

    def meta(video="v", frame="00001", obj="1", exp=""):
        return SampleMeta(dataset="a2d", video_id=video, object_id=obj, frame_id=frame, ref_frame_id=frame,
                          sentence="a cat", original_size=(4, 4), expression_id=exp)

    def seg_frames(s, frames, sentence="the red circle"):
        return list(s.segment(frames, sentence))

    m2 = np.zeros((4, 4), bool)

    def a_file(d):  # an output location that is a file, not a folder
        path = d / "taken"
        path.write_text("x")
        return path

    def outputs_given_to_library_functions():
        from lbdt.config import load_config
        from lbdt.data.synth import write_benchmark
        from lbdt.demo import run_demo
        from lbdt.engine.evaluate import EvaluateSettings, evaluate
        from lbdt.engine.train import train
        from lbdt.pretrained import convert_official_checkpoint
        from lbdt.tools.benchmark import BenchmarkSettings, benchmark
        from lbdt.tools.prepare_data import prepare_dataset

        def train_into(d):
            cfg = load_config("synthetic_tiny")
            cfg.train.output_dir = str(a_file(d))
            return train(cfg)

        return [  # each must refuse before any work: no dataset read, no weights loaded, no minutes of measuring
            ("evaluate-output-is-a-file", lambda s, d: evaluate("synthetic-tiny", EvaluateSettings(dataset="a2d", root=str(d / "none"),
                                                                split="test", output_dir=a_file(d))), ["taken"]),
            ("synth-output-is-a-file", lambda s, d: write_benchmark(a_file(d)), ["taken", "not a folder"]),
            ("demo-output-is-a-file", lambda s, d: run_demo(out_dir=a_file(d)), ["taken", "not a folder"]),
            ("prepare-output-is-a-file", lambda s, d: prepare_dataset("a2d", d, a_file(d)), ["taken"]),
            ("benchmark-output-is-a-folder", lambda s, d: benchmark(BenchmarkSettings(model="tiny"), out=d,
                                                                    echo=lambda line: None), ["folder"]),
            ("convert-destination-is-a-folder", lambda s, d: convert_official_checkpoint(d / "none.pth", d),
             ["folder"]),
            ("train-output-is-a-file", lambda s, d: train_into(d), ["train.output_dir", "taken"]),
        ]

    return outputs_given_to_library_functions() + [
        ("segmenter-size-int", lambda s, d: VideoSegmenter(s.model, size=320), ["size", "320"]),
        ("segmenter-size-odd", lambda s, d: VideoSegmenter(s.model, size=(100, 100)), ["size"]),
        ("segmenter-size-one-value", lambda s, d: VideoSegmenter(s.model, size=(32,)), ["size"]),
        ("segmenter-size-float", lambda s, d: VideoSegmenter(s.model, size=(32.0, 32.0)), ["size"]),
        ("segmenter-frame-gap-negative", lambda s, d: VideoSegmenter(s.model, frame_gap=-1), ["frame_gap"]),
        ("segmenter-batch-size-zero", lambda s, d: VideoSegmenter(s.model, batch_size=0), ["batch_size"]),
        ("segmenter-batch-size-float", lambda s, d: VideoSegmenter(s.model, batch_size=1.5), ["batch_size"]),
        ("segmenter-threshold-5", lambda s, d: VideoSegmenter(s.model, threshold=5), ["threshold"]),
        ("segmenter-threshold-text", lambda s, d: VideoSegmenter(s.model, threshold="0.5"), ["threshold"]),
        ("segmenter-device-mps", lambda s, d: VideoSegmenter(s.model, device="mps"), ["mps"]),
        ("segmenter-device-typo", lambda s, d: VideoSegmenter(s.model, device="gpu"), ["gpu"]),
        ("segmenter-weights-missing", lambda s, d: VideoSegmenter.from_pretrained(str(d / "none.pt")), ["none.pt"]),
        ("frames-float-0-255", lambda s, d: seg_frames(s, _frames_u8().astype(np.float32)), ["frame 0", "[0, 1]"]),
        ("frames-float-nan", lambda s, d: seg_frames(s, np.full((2, 8, 8, 3), np.nan, np.float32)), ["frame 0"]),
        ("frames-float-negative", lambda s, d: seg_frames(s, np.full((2, 8, 8, 3), -0.5)), ["frame 0", "[0, 1]"]),
        ("frames-int64", lambda s, d: seg_frames(s, _frames_u8().astype(np.int64)), ["frame 0", "int64"]),
        ("frames-5-channels", lambda s, d: seg_frames(s, np.zeros((2, 8, 8, 5), np.uint8)), ["frame 0"]),
        ("frames-zero-size", lambda s, d: seg_frames(s, np.zeros((2, 0, 8, 3), np.uint8)), ["frame 0"]),
        ("frames-2d", lambda s, d: seg_frames(s, np.zeros((8, 8), np.uint8)), ["arrays"]),
        ("frames-empty-list", lambda s, d: seg_frames(s, []), ["zero frames"]),
        ("frames-mixed-list", lambda s, d: seg_frames(s, [np.zeros((8, 8, 3), np.uint8), "frame"]), ["frame 1"]),
        ("frames-none", lambda s, d: seg_frames(s, None), ["NoneType"]),
        ("sentence-punctuation", lambda s, d: seg_frames(s, _frames_u8(), "?!"), ["'?!'"]),
        ("sentence-not-text", lambda s, d: seg_frames(s, _frames_u8(), 5), ["string"]),
        ("sentences-none", lambda s, d: list(s.segment_many(_frames_u8(), [])), ["sentence"]),
        ("to-rgb-float-above-1", lambda s, d: to_rgb(np.full((2, 2, 3), 1.5), "x"), ["x", "[0, 1]"]),
        ("open-video-number", lambda s, d: open_video(42), ["int"]),
        ("word-vectors-nan", lambda s, d: WordVectors(["a"], np.array([[np.nan, 1.0]])), ["'a'", "NaN"]),
        ("word-vectors-count", lambda s, d: WordVectors(["a", "b"], np.zeros((1, 3))), ["2 words"]),
        ("word-vectors-text", lambda s, d: WordVectors(["a"], np.array([["x"]])), ["numbers"]),
        ("glove-not-utf8", lambda s, d: WordVectors.from_glove(glove(d, b"\xff\xfe 1 2\n"), dim=2), [":1", "UTF-8"]),
        ("glove-inf", lambda s, d: WordVectors.from_glove(glove(d, b"a 1 inf\n"), dim=2), [":1"]),
        ("glove-missing", lambda s, d: WordVectors.from_glove(d / "none.txt"), ["none.txt"]),
        ("source-root-missing", lambda s, d: A2DSource(d / "none"), ["none"]),
        ("source-list-missing", lambda s, d: A2DSource(d).records("val"), ["val.txt"]),
        ("metrics-probabilities", lambda s, d: metrics.iou(np.full((4, 4), 0.3), m2), ["pred", "0 and 1"]),
        ("metrics-nan-mask", lambda s, d: metrics.iou(m2, np.full((4, 4), np.nan)), ["gt"]),
        ("metrics-3d", lambda s, d: metrics.iou(np.zeros((1, 4, 4)), m2), ["pred", "2-D"]),
        ("metrics-shape-mismatch", lambda s, d: metrics.iou(np.zeros((4, 5), bool), m2), ["differ"]),
        ("metrics-string-mask", lambda s, d: metrics.iou(np.array([["a"]]), np.array([["b"]])), ["dtype"]),
        ("metrics-no-samples", lambda s, d: metrics.mean_iou([]), ["zero samples"]),
        ("writer-video-escapes", lambda s, d: PngMaskWriter(root=d).path_for(meta(video="../x")), ["video id"]),
        ("writer-frame-absolute", lambda s, d: PngMaskWriter(root=d).path_for(meta(frame="/etc/x")), ["frame id"]),
        ("zip-entry-escapes", lambda s, d: SubmissionWriter(zip_path=d / "s.zip").entry_name(meta(exp="../../x")),
         ["expression/object id"]),
    ]


API_IDS = [c[0] for c in _api_cases()]


@pytest.mark.parametrize("case", API_IDS)
def test_api_bad_input(case, segmenter, tmp_path):
    _, call, needles = next(c for c in _api_cases() if c[0] == case)
    before = _listing(tmp_path)
    with pytest.raises(LBDTError) as e:
        call(segmenter, tmp_path)
    message = str(e.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert _listing(tmp_path) - before <= {"glove.txt", "taken"}  # only the inputs the case wrote


def test_api_graceful_frames(segmenter):
    """Grayscale, RGBA, bool and float-in-[0,1] frames are accepted: one mask per frame at the input size."""
    rng = np.random.default_rng(1)
    for frames in (rng.integers(0, 256, (3, 24, 32), dtype=np.uint8),
                   rng.integers(0, 256, (3, 24, 32, 4), dtype=np.uint8),
                   rng.random((3, 24, 32, 3)) > 0.5,
                   rng.random((3, 24, 32, 3)).astype(np.float32)):
        preds = list(segmenter.segment(frames, "the red circle"))
        assert len(preds) == 3 and all(p.mask.shape == (24, 32) for p in preds)
