"""Bad input on the install and export surfaces (issues 21 and 23): `lbdt download` (names, `--from` files and
URLs, `--max-words`, LBDT_HOME, install manifests), `lbdt export`, the ONNX backend's manifest and files, weights
by name / path in Python, and a closed stdout.

Each case asserts the exact outcome: the exit code and one stderr line naming the input (CLI), or the
`LBDTError` naming it (Python), and that the install / export folder is the old one or the new one. The kill -9
cases run `lbdt` in a subprocess that SIGKILLs itself at a named point (`LBDT_CRASH_AT`, `lbdt.io.crash_point`).
HTTP cases use a loopback server only.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lbdt import io, registry
from lbdt.cli import main
from lbdt.download import install
from lbdt.errors import LBDTError
from lbdt.export import export_onnx
from lbdt.onnx_backend import OnnxRuntimeModel, load_exported, read_manifest
from lbdt.predictor import VideoSegmenter
from lbdt.pretrained import card_of, load_pretrained
from lbdt.registry import installed
from lbdt.words import WordVectors
from media import write_mp4
from test_pretrained import tiny_state

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="ONNX extras not installed (pip install 'lbdt[onnx]')")
GLOVE_FULL = registry.KNOWN["glove-840b"].words


# ---------------------------------------------------------------- harness
def one_line_error(args: list[str], capsys, needles: list[str], code: int = 2) -> str:
    """`lbdt ARGS` exits `code` with exactly one stderr line, no traceback, naming every needle."""
    try:
        got = main(args)
    except SystemExit as e:  # argparse
        got = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, (got, err)
    assert "Traceback" not in err and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_lbdt(args: list[str], *, crash_at: str | None = None, home: Path | None = None, **kw):
    env = dict(ENV)
    if crash_at is not None:
        env["LBDT_CRASH_AT"] = crash_at
    if home is not None:
        env["LBDT_HOME"] = str(home)
    streams = {"stderr": subprocess.PIPE} if "stdout" in kw else {"capture_output": True}
    return subprocess.run([sys.executable, "-m", "lbdt.cli", *args], check=False, env=env, text=True, timeout=600,
                          **streams, **kw)


def glove_file(path: Path, n: int, dim: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, dim)).round(3)
    path.write_text("".join(f"w{i} {' '.join(f'{x:.3f}' for x in row)}\n" for i, row in enumerate(rows)))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Hidden staging / replaced folders beside installs or exports."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ("staging" in p.name
                                                                                  or "replaced" in p.name))


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "lbdt_home"
    monkeypatch.setenv("LBDT_HOME", str(folder))
    return folder


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """An lbdt checkpoint of the random tiny variant."""
    _, state = tiny_state()
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    return path


@pytest.fixture
def stand_in(monkeypatch):
    """official-lbdt4 as a tiny lbdt checkpoint without a published checksum (as the real one has none)."""
    entry = replace(registry.KNOWN["official-lbdt4"], kind="lbdt", variant="tiny", filename="tiny.pt", min_bytes=0,
                    settings={"dataset": "a2d", "size": [64, 96], "frame_gap": 2, "max_words": 25})
    monkeypatch.setitem(registry.KNOWN, "official-lbdt4", entry)
    return entry


# ---------------------------------------------------------------- a closed stdout
@pytest.mark.parametrize("args", [["download", "--list"], ["info", "official-lbdt4"], ["show-config", "synthetic_tiny"]])
def test_a_closed_stdout_ends_quietly_for_every_subcommand(args, tmp_path):
    """`lbdt download --list | head`: the reader has gone; no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    read, write = os.pipe()
    os.close(read)  # a reader that has already exited, as `head` after its lines
    try:
        r = run_lbdt(args, home=tmp_path / "h", stdout=write)
    finally:
        os.close(write)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""


# ---------------------------------------------------------------- weights names
@pytest.mark.parametrize("args, wrong, right", [
    (["download", "official-lbtd4"], "official-lbtd4", "official-lbdt4"),
    (["download", "glove_840b"], "glove_840b", "glove-840b"),
    (["info", "synthetic_tiny"], "synthetic_tiny", "synthetic-tiny"),
    (["predict", "clip.mp4", "--text", "a dog", "--weights", "synthetic_tiny"], "synthetic_tiny", "synthetic-tiny"),
    (["export", "official-lbtd4", "--out", "out"], "official-lbtd4", "official-lbdt4"),
])
def test_weights_name_typos_get_did_you_mean(args, wrong, right, tmp_path, monkeypatch, capsys, home):
    monkeypatch.chdir(tmp_path)
    if args[0] == "predict":
        write_mp4(tmp_path / "clip.mp4", [np.zeros((32, 32, 3), np.uint8)] * 2)
    if args[0] == "export" and not HAVE_ONNX:
        pytest.skip("ONNX extras not installed")
    one_line_error(args, capsys, [wrong, f"did you mean {right!r}?"])
    assert not (tmp_path / "out").exists() and not home.exists()


def test_python_loading_by_a_mistyped_name_suggests_the_name():
    with pytest.raises(LBDTError, match=r"^official-lbtd4: no such checkpoint file \(did you mean 'official-lbdt4'\?\)"):
        load_pretrained("official-lbtd4")


@pytest.mark.parametrize("weights, needle", [
    (b"synthetic-tiny", "got a bytes"),
    (3, "got a int"),
    ("", "got ''"),
    ("   ", "got '   '"),
])
def test_python_weights_that_are_not_a_name_or_path(weights, needle):
    with pytest.raises(LBDTError, match=r"^weights: expected a name, a checkpoint path or an https URL, "
                       + needle.replace("(", r"\(")):
        load_pretrained(weights)


def test_python_weights_as_an_open_file_is_refused(tmp_path, tiny_checkpoint):
    with open(tiny_checkpoint, "rb") as f, pytest.raises(LBDTError, match="got a BufferedReader .*not an open file"):
        load_pretrained(f)


def test_python_weights_as_a_folder_says_it_is_one(tmp_path):
    with pytest.raises(LBDTError, match=r"a folder, not a checkpoint file .*--backend onnxruntime"):
        load_pretrained(tmp_path)


def test_python_sha256_of_the_wrong_type(tmp_path):
    with pytest.raises(LBDTError, match=r"^sha256: expected 64 hex digits as a string, got a int"):
        load_pretrained("https://127.0.0.1:9/w.pt", sha256=123)


# ---------------------------------------------------------------- install arguments
@pytest.mark.parametrize("kwargs, message", [
    ({"name": 3}, r"^weights name: expected a non-empty name such as official-lbdt4, got 3"),
    ({"name": ""}, r"^weights name: expected a non-empty name"),
    ({"name": "glove-840b", "source": 5}, r"^--from: expected a file path or an http\(s\) URL, got 5"),
    ({"name": "glove-840b", "source": ""}, r"^--from: expected a file path or an http\(s\) URL, got ''"),
    ({"name": "glove-840b", "max_words": "5"}, r"^--max-words: must be an integer >= 1, got '5'"),
    ({"name": "glove-840b", "max_words": 0}, r"^--max-words: must be an integer >= 1, got 0"),
    ({"name": "glove-840b", "max_words": True}, r"^--max-words: must be an integer >= 1, got True"),
    ({"name": "glove-840b", "fp16": "yes"}, r"^--fp16: must be True or False, got 'yes'"),
    ({"name": "official-lbdt4", "max_words": 5}, r"^official-lbdt4: --max-words and --fp16 only apply to word tables"),
])
def test_install_arguments_are_checked_before_anything_is_written(kwargs, message, home):
    name = kwargs.pop("name")
    with pytest.raises(LBDTError, match=message):
        install(name, progress=False, **kwargs)
    assert not home.exists()


@pytest.mark.parametrize("args, needles", [
    (["download", "--max-words", "5"], ["--max-words", "need a NAME"]),
    (["download", "--from", "x.zip", "--force"], ["--from, --force", "need a NAME"]),
    (["download", "glove-840b", "--list"], ["--list takes no NAME", "'glove-840b'"]),
    (["download", "glove-840b", "--max-words", "0"], ["--max-words", "must be an integer >= 1, got 0"]),
    (["download", "glove-840b", "--from", "missing.zip"], ["--from missing.zip: no such file",
                                                           "glove.840B.300d.zip"]),
])
def test_download_cli_option_mistakes(args, needles, tmp_path, monkeypatch, capsys, home):
    monkeypatch.chdir(tmp_path)
    one_line_error(args, capsys, needles)
    assert not home.exists() or not any(home.iterdir())


# ---------------------------------------------------------------- LBDT_HOME
def test_lbdt_home_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "h").write_text("not a folder")
    monkeypatch.setenv("LBDT_HOME", str(tmp_path / "h"))
    glove_file(tmp_path / "g.txt", 3)
    one_line_error(["download", "glove-840b", "--from", str(tmp_path / "g.txt"), "--max-words", "3"], capsys,
                   ["LBDT_HOME", str(tmp_path / "h"), "exists and is not a folder"])
    assert (tmp_path / "h").read_text() == "not a folder"


def test_lbdt_home_below_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("LBDT_HOME", str(tmp_path / "f" / "home"))
    glove_file(tmp_path / "g.txt", 3)
    one_line_error(["download", "glove-840b", "--from", str(tmp_path / "g.txt"), "--max-words", "3"], capsys,
                   ["LBDT_HOME", "is not a folder"])


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_lbdt_home_not_writable(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("LBDT_HOME", str(locked / "home"))
    glove_file(tmp_path / "g.txt", 3)
    try:
        one_line_error(["download", "glove-840b", "--from", str(tmp_path / "g.txt"), "--max-words", "3"], capsys,
                       ["LBDT_HOME", "is not writable"])
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- --from files that are not the file
def test_a_small_junk_file_is_not_the_official_checkpoint(tmp_path, capsys, home):
    """The real entry: LBDT-4 holds 94 M numbers, so a 5 kB file is refused by its size, before any loading."""
    (tmp_path / "a2d_lbdt4.pth").write_bytes(os.urandom(5000))
    one_line_error(["download", "official-lbdt4", "--from", str(tmp_path / "a2d_lbdt4.pth")], capsys,
                   ["a2d_lbdt4.pth: 5,000 bytes, but a2d_lbdt4.pth (official-lbdt4) is about 0.4 GB; not that file"])
    assert installed("official-lbdt4") is None


@pytest.mark.parametrize("content, needle", [
    (b"hello world\n" * 10, "not a PyTorch file (it starts with b'hello wo')"),  # was "(KeyError: 101)"
    (b"", "the file is empty"),
    ("zip", "a zip archive, not a PyTorch file"),
    ("torn", "damaged"),
])
def test_junk_checkpoint_files_give_a_clear_line(content, needle, tmp_path, capsys, home, stand_in, tiny_checkpoint):
    path = tmp_path / "junk.pth"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", "hi")
    elif content == "torn":
        data = tiny_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    line = one_line_error(["download", "official-lbdt4", "--from", str(path)], capsys,
                          [str(path), needle, "official-lbdt4 is tiny.pt"])
    assert "KeyError" not in line
    assert installed("official-lbdt4") is None and path.is_file()  # a --from file is never deleted


# ---------------------------------------------------------------- word counts
def test_a_74_word_file_is_not_glove_840b(tmp_path, capsys, home):
    src = glove_file(tmp_path / "glove.840B.300d.txt", 74)
    one_line_error(["download", "glove-840b", "--from", str(src)], capsys,
                   [f"74 words, but glove.840B.300d.zip (glove-840b) has {GLOVE_FULL:,}", "--max-words N with N <= 74"])
    assert installed("glove-840b") is None
    assert not home.exists() or leftovers(home) == []


def test_max_words_beyond_the_file_is_refused(tmp_path, capsys, home):
    src = glove_file(tmp_path / "g.txt", 74)
    one_line_error(["download", "glove-840b", "--from", str(src), "--max-words", "400000"], capsys,
                   ["only 74 words, fewer than --max-words 400,000", f"glove-840b has {GLOVE_FULL:,}"])
    assert installed("glove-840b") is None


def test_a_max_words_install_says_so_and_list_reports_the_words_stored(tmp_path, capsys, home):
    src = glove_file(tmp_path / "g.txt", 74)
    assert main(["download", "glove-840b", "--from", str(src), "--max-words", "50", "--fp16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"glove-840b: installed in {home / 'glove-840b'}; 50 of glove-840b's {GLOVE_FULL:,} words kept " \
           "(--max-words 50)" in out
    manifest = installed("glove-840b")
    assert manifest["words"] == 50 and manifest["max_words"] == 50 and manifest["fp16"] is True
    vocab = (home / "glove-840b" / "glove-840b.vocab.txt").read_text().split("\n")[:-1]
    assert vocab == [f"w{i}" for i in range(50)]
    assert main(["download", "--list"]) == 0
    assert f"installed: {home / 'glove-840b'}, 50 words (--max-words 50), fp16" in capsys.readouterr().out


def test_list_reports_the_stored_count_not_the_manifest_request(tmp_path, capsys, home):
    """--list reads `words` (what was stored), so a manifest whose request differs cannot mislead it."""
    src = glove_file(tmp_path / "g.txt", 20)
    install("glove-840b", source=src, max_words=20, progress=False)
    path = home / "glove-840b" / registry.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "words": 20, "max_words": 400000}))
    assert main(["download", "--list"]) == 0
    assert "20 words (--max-words 400,000)" in capsys.readouterr().out


@pytest.mark.parametrize("line, needle", [
    ("dog 1 2 3\n", "g.txt:1: expected a word and 300 numbers"),
    ("dog " + " ".join(["x"] * 300) + "\n", "g.txt:1: vector has a non-numeric value"),
    ("dog " + " ".join(["nan"] * 300) + "\n", "g.txt:1: vector of 'dog' holds NaN or infinity"),
])
def test_malformed_glove_lines_name_their_line(line, needle, tmp_path, capsys, home):
    (tmp_path / "g.txt").write_text(line)
    one_line_error(["download", "glove-840b", "--from", str(tmp_path / "g.txt"), "--max-words", "1"], capsys, [needle])
    assert installed("glove-840b") is None and leftovers(home) == []


# ---------------------------------------------------------------- reinstalls
def test_reinstalls_say_what_changed(tmp_path, capsys, home):
    a, b = glove_file(tmp_path / "a.txt", 10, seed=1), glove_file(tmp_path / "b.txt", 10, seed=2)
    args = ["download", "glove-840b", "--max-words", "10", "--no-progress"]
    assert main([*args, "--from", str(a)]) == 0
    assert capsys.readouterr().out.startswith(f"glove-840b: installed in {home / 'glove-840b'};")
    first = installed("glove-840b")
    assert main([*args, "--from", str(a)]) == 0
    assert "glove-840b: unchanged in" in capsys.readouterr().out and installed("glove-840b") == first
    assert main(args) == 0
    assert "already installed in" in capsys.readouterr().out
    assert main([*args, "--from", str(b)]) == 0
    assert "glove-840b: reinstalled in" in capsys.readouterr().out
    assert installed("glove-840b")["sha256"] == sha(b)
    assert main([*args, "--from", str(b), "--force"]) == 0
    assert "reinstalled in" in capsys.readouterr().out and leftovers(home) == []


# ---------------------------------------------------------------- no published checksum
def test_a_checkpoint_without_a_published_checksum_is_marked_unverified(tiny_checkpoint, capsys, home, stand_in):
    result = install("official-lbdt4", source=tiny_checkpoint, progress=False)
    assert result.verified.startswith("unverified: no checksum is published")
    assert "unverified" in result.message()
    card = card_of("official-lbdt4")  # the installed checkpoint's card, not the shipped one
    assert card["verification"].startswith("unverified") and card["metrics"]["a2d_sentences_test"]["AP"] == 47.2
    assert load_pretrained("official-lbdt4").card["verification"] == card["verification"]
    assert main(["info", "official-lbdt4"]) == 0
    assert "verification: 'unverified: no checksum is published" in capsys.readouterr().out
    assert main(["download", "--list"]) == 0
    assert "unverified (no published checksum)" in capsys.readouterr().out


def test_a_pinned_checksum_is_not_marked_unverified(tiny_checkpoint, home, monkeypatch, stand_in):
    monkeypatch.setitem(registry.KNOWN, "official-lbdt4", replace(stand_in, sha256=sha(tiny_checkpoint)))
    result = install("official-lbdt4", source=tiny_checkpoint, progress=False)
    assert result.verified == "sha256 (published)" and "verification" not in card_of("official-lbdt4")


# ---------------------------------------------------------------- damaged install manifests
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: "{not json", "malformed JSON"),
    (lambda m: _deep(100_000), "nested too deeply"),
    (lambda m: json.dumps({**m, "pad": "x" * (1 << 20)}), "too large for install manifest"),
    (lambda m: json.dumps([m]), "not an install manifest (a JSON list)"),
    (lambda m: json.dumps({**m, "bytes": "12"}), "field 'bytes' must be int, got a str"),
    (lambda m: json.dumps({**m, "fp16": 0}), "field 'fp16' must be bool, got a int"),
    (lambda m: json.dumps({**m, "files": ["../../etc/passwd"]}), "is not a plain name"),
    (lambda m: json.dumps({**m, "files": [*m["files"], "gone.npy"]}), "gone.npy: missing from the install"),
    (lambda m: json.dumps({**m, "name": "official-lbdt4"}), "not the manifest of glove-840b"),
])
def test_a_damaged_install_manifest_says_how_to_repair(mutate, needle, tmp_path, capsys, home):
    install("glove-840b", source=glove_file(tmp_path / "g.txt", 4), max_words=4, progress=False)
    path = home / "glove-840b" / registry.MANIFEST_FILE
    path.write_text(mutate(json.loads(path.read_text())))
    one_line_error(["download", "--list"], capsys, [needle, "lbdt download glove-840b --force"])


# ---------------------------------------------------------------- hostile servers (loopback)
class _Hostile(http.server.BaseHTTPRequestHandler):
    """/big: announces more than any known file; /endless: streams past the cap without a length; /short:
    announces 1000 bytes and sends 10; anything else: 404."""

    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"x" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"y" * 10)
        else:
            self.send_error(404)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile():
    pytest.importorskip("requests")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path, needles, kept", [
    ("/big", ["the server offers 1,000,000,000,000 bytes, more than this file can be", "nothing downloaded"], False),
    ("/endless", ["more than 2,000,000 bytes", "nothing kept"], False),
    ("/short", ["bytes kept in", "run again to resume"], True),
    ("/missing", ["404"], False),
])
def test_hostile_servers_are_refused_with_one_line(path, needles, kept, hostile, capsys, home, monkeypatch):
    monkeypatch.setitem(registry.KNOWN, "imagenet-resnet50",
                        replace(registry.KNOWN["imagenet-resnet50"], max_bytes=2_000_000))
    one_line_error(["download", "imagenet-resnet50", "--from", hostile + path, "--no-progress"], capsys,
                   [hostile + path, *needles])
    assert installed("imagenet-resnet50") is None
    part = home / "downloads" / "resnet50-0676ba61.pth.part"
    assert part.is_file() == kept
    assert not (home / "downloads" / "resnet50-0676ba61.pth").exists()


# ---------------------------------------------------------------- kill -9 during download
@pytest.mark.parametrize("crash_at, which", [("install-converted", "old"), ("folder-staged", "old"),
                                             ("folder-swapped", "new")])
def test_download_killed_leaves_the_old_install_or_the_new_one(crash_at, which, tmp_path):
    home = tmp_path / "home"
    old, new = glove_file(tmp_path / "old.txt", 6, seed=1), glove_file(tmp_path / "new.txt", 6, seed=2)
    args = ["download", "glove-840b", "--max-words", "6", "--no-progress"]
    assert run_lbdt([*args, "--from", str(old)], home=home).returncode == 0
    r = run_lbdt([*args, "--from", str(new)], home=home, crash_at=crash_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    env = os.environ.get("LBDT_HOME")
    os.environ["LBDT_HOME"] = str(home)
    try:
        manifest = installed("glove-840b")  # checks the manifest and that its files are all there
        assert manifest["sha256"] == sha(old if which == "old" else new)
        table = WordVectors.load_cache(home / "glove-840b" / "glove-840b.vectors.npy")
        want = np.loadtxt(old if which == "old" else new, usecols=range(1, 301), dtype=np.float32)
        np.testing.assert_array_equal(np.asarray(table.vectors), want)  # the files agree with the manifest
        r = run_lbdt([*args, "--from", str(new)], home=home)  # the next run completes and tidies up
        assert r.returncode == 0, r.stderr
        assert installed("glove-840b")["sha256"] == sha(new) and leftovers(home) == []
    finally:
        if env is None:
            del os.environ["LBDT_HOME"]
        else:
            os.environ["LBDT_HOME"] = env


# ---------------------------------------------------------------- the folder swap itself
_SWAP = """
import sys
from pathlib import Path
from lbdt import io
if sys.argv[2] == "fallback":
    io._exchange = lambda a, b: False
with io.atomic_folder(Path(sys.argv[1])) as stage:
    (stage / "part").write_text("new")
"""


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_folder_swap_killed_between_steps_is_repaired_by_the_next_swap(mode, tmp_path):
    final = tmp_path / "install"
    final.mkdir()
    (final / "part").write_text("old")
    r = subprocess.run([sys.executable, "-c", _SWAP, str(final), mode], env={**ENV, "LBDT_CRASH_AT": "folder-swapped"},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    if mode == "exchange":  # one atomic step: the new folder is already in place
        assert (final / "part").read_text() == "new"
    else:  # the one gap of two renames: the old folder waits beside the name
        assert not final.exists() and [n.split("-")[0] for n in leftovers(tmp_path)] == [".install.replaced",
                                                                                          ".install.staging"]
    with io.atomic_folder(final) as stage:  # the next swap on the name repairs, then replaces
        assert (not final.exists() or (final / "part").is_file())
        if mode == "fallback":
            assert (final / "part").read_text() == "old"  # put back before anything else happens
        (stage / "part").write_text("newest")
    assert (final / "part").read_text() == "newest" and leftovers(tmp_path) == []


def test_folder_swap_failing_inside_leaves_the_old_folder(tmp_path):
    final = tmp_path / "install"
    final.mkdir()
    (final / "part").write_text("old")
    with pytest.raises(LBDTError, match="checks failed"), io.atomic_folder(final) as stage:
        (stage / "part").write_text("half")
        raise LBDTError("checks failed")
    assert (final / "part").read_text() == "old" and leftovers(tmp_path) == []


# ---------------------------------------------------------------- export
@pytest.fixture(scope="module")
def export_a(tmp_path_factory):
    """An export of synthetic-tiny (model A) through the library."""
    if not HAVE_ONNX:
        pytest.skip("ONNX extras not installed")
    out = tmp_path_factory.mktemp("exp") / "a"
    export_onnx("synthetic-tiny", out)
    return out


@pytest.fixture
def export_copy(export_a, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(export_a, dst)
    return dst


@pytest.mark.parametrize("setup, needles", [
    (lambda d: (d / "out").mkdir() or (d / "out" / "notes.txt").write_text("mine"),
     ["--out", "not an lbdt export", "not empty"]),
    (lambda d: (d / "out").write_text("a file"), ["--out", "exists and is not a folder"]),
    (lambda d: (d / "f").write_text("x"), ["--out", "is not a folder"]),
])
def test_export_refuses_folders_it_may_not_replace(setup, needles, tmp_path, monkeypatch, capsys):
    if not HAVE_ONNX:
        pytest.skip("ONNX extras not installed")
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    out = "f/sub" if (tmp_path / "f").exists() else "out"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    one_line_error(["export", "synthetic-tiny", "--out", out], capsys, needles)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


@needs_onnx
def test_export_over_an_export_with_a_foreign_file_is_refused(export_copy, capsys):
    (export_copy / "notes.txt").write_text("mine")
    one_line_error(["export", "synthetic-tiny", "--out", str(export_copy)], capsys,
                   ["an earlier export that also holds notes.txt", "move those away"])
    assert (export_copy / "notes.txt").read_text() == "mine"


@needs_onnx
def test_export_empty_out_and_non_path_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one_line_error(["export", "synthetic-tiny", "--out", ""], capsys, ["--out: empty path"])
    one_line_error(["export", "synthetic-tiny", "--out", "."], capsys, ["--out .: the current folder"])
    one_line_error(["export", "synthetic-tiny", "--out", ".."], capsys, ["--out ..: the current folder or one above"])
    with pytest.raises(LBDTError, match=r"^--out: expected a folder path, got a int"):
        export_onnx("synthetic-tiny", 5)
    with pytest.raises(LBDTError, match=r"^weights: expected an LBDT model, a name, .* got a dict"):
        export_onnx({}, tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


@needs_onnx
def test_a_good_export_records_every_file_and_loads(export_a):
    m = read_manifest(export_a)
    assert set(m["files"]) == {"text_encoder.onnx", "frame_model.onnx", "words.txt", "vectors.npy"}
    for name, record in m["files"].items():
        assert record == {"sha256": sha(export_a / name), "bytes": (export_a / name).stat().st_size}
    assert m["graphs"]["frame_model"]["sha256"] == m["files"]["frame_model.onnx"]["sha256"]


def _set(m: dict, dotted: str, value) -> dict:
    keys = dotted.split(".")
    target = m
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value
    return m


@needs_onnx
@pytest.mark.parametrize("mutate, needle", [
    (lambda m: _set(m, "size", "320"), "field 'size' must be [H, W] with positive integers, got '320'"),
    (lambda m: _set(m, "size", [64, 0]), "field 'size' must be [H, W]"),
    (lambda m: _set(m, "frame_gap", -1), "field 'frame_gap' must be an integer >= 0, got -1"),
    (lambda m: _set(m, "max_words", True), "field 'max_words' must be an integer >= 1, got True"),
    (lambda m: _set(m, "max_words", 7), "must be [batch, 7, dim] (max_words 7)"),
    (lambda m: _set(m, "sides.min", "64"), "field 'sides.min' must be an integer >= 1, got '64'"),
    (lambda m: _set(m, "sides.max", 32), "field 'sides.max' must be an integer >= 64, got 32"),
    (lambda m: _set(m, "threshold", 2), "field 'threshold' must be a number in [0, 1], got 2"),
    (lambda m: _set(m, "graphs.text_encoder.file", "../x.onnx"), "'../x.onnx' is not a plain name"),
    (lambda m: _set(m, "graphs.frame_model.file", "text_encoder.onnx"), "both graphs are named"),
    (lambda m: _set(m, "graphs", []), "field 'graphs.text_encoder.file' is missing"),
    (lambda m: _set(m, "word_vectors.vectors", "/etc/passwd"), "'/etc/passwd' is not a plain name"),
    (lambda m: _set(m, "word_vectors.dim", 50), "field 'word_vectors.dim' is 50, but the text graph takes 300"),
    (lambda m: _set(m, "files", {**m["files"], "vectors.npy": {"sha256": "0" * 64, "bytes": -1}}),
     "field 'files.vectors.npy' must be"),
    (lambda m: _set(m, "files", {}), "field 'files' must map file names"),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "manifest lacks files; it was written by an older lbdt"),
    (lambda m: _set(m, "version", 1), "manifest version 1 (no file checksums) is older"),
    (lambda m: _set(m, "version", 99), "manifest version 99 is newer than this lbdt"),
    (lambda m: _set(m, "version", "2"), "field 'version' must be an integer >= 1, got '2'"),
    (lambda m: [m], "not an lbdt ONNX manifest"),
])
def test_onnx_manifest_fields_of_the_wrong_type_or_range(mutate, needle, export_copy):
    path = export_copy / "lbdt_onnx.json"
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(LBDTError) as e:
        VideoSegmenter.from_pretrained(export_copy, backend="onnxruntime")
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value) or str(export_copy) in str(e.value)
    with pytest.raises(LBDTError):
        read_manifest(export_copy)


@needs_onnx
@pytest.mark.parametrize("content, needle", [
    (_deep(200_000), "nested too deeply"),
    ('{"format": "lbdt-onnx", "pad": "' + "x" * (2 << 20) + '"}', "too large for ONNX manifest"),
    ("\xff\xfe", "not UTF-8 text"),
])
def test_onnx_manifest_deeply_nested_huge_or_not_text(content, needle, export_copy, capsys, tmp_path):
    (export_copy / "lbdt_onnx.json").write_text(content, encoding="latin-1")
    write_mp4(tmp_path / "clip.mp4", [np.zeros((32, 32, 3), np.uint8)] * 2)
    one_line_error(["predict", str(tmp_path / "clip.mp4"), "--text", "the red circle", "--backend", "onnxruntime",
                    "--weights", str(export_copy), "--out", str(tmp_path / "o")], capsys, ["lbdt_onnx.json", needle])
    assert not (tmp_path / "o").exists()


@needs_onnx
def test_swapped_graph_files_are_refused(export_copy):
    a, b = export_copy / "text_encoder.onnx", export_copy / "frame_model.onnx"
    a.rename(export_copy / "tmp")
    b.rename(a)
    (export_copy / "tmp").rename(b)
    with pytest.raises(LBDTError, match=r"(frame_model|text_encoder).onnx: holds what .*lbdt_onnx.json records "
                                        r"for (text_encoder|frame_model).onnx \(files swapped or renamed\)"):
        OnnxRuntimeModel(export_copy)


@needs_onnx
def test_a_graph_from_another_model_is_refused(export_copy):
    """A valid graph of another checkpoint (the same network with other weights) under this manifest: the folder
    mixes two exports. ONNX Runtime would run it; the manifest's checksum does not let it."""
    import onnx
    from onnx import numpy_helper

    path = export_copy / "frame_model.onnx"
    graph = onnx.load(str(path))
    weight = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path), full_check=True)  # a well-formed graph, just not this export's
    with pytest.raises(LBDTError, match=r"frame_model.onnx: [\d,]+ bytes, sha256 differs from what .* records .*"
                                        r"mixes two exports"):
        OnnxRuntimeModel(export_copy)


@needs_onnx
@pytest.mark.parametrize("damage, needle", [
    (lambda d: (d / "vectors.npy").unlink(), "vectors.npy: missing"),
    (lambda d: (d / "words.txt").write_text("dog\n"), "words.txt: 4 bytes, sha256 differs"),
    (lambda d: (d / "frame_model.onnx").write_bytes((d / "frame_model.onnx").read_bytes()[:1000]),
     "frame_model.onnx: 1,000 bytes, sha256 differs"),
])
def test_damaged_export_files_are_refused(damage, needle, export_copy):
    damage(export_copy)
    with pytest.raises(LBDTError, match=needle):
        load_exported(export_copy)


# ---------------------------------------------------------------- kill -9 during export
@needs_onnx
@pytest.mark.parametrize("crash_at, which", [("export-graph", "old"),
                                             pytest.param("folder-swapped", "new", marks=pytest.mark.slow)])
def test_export_killed_while_replacing_leaves_the_old_export_or_the_new_one(crash_at, which, export_copy, tmp_path):
    """Replacing an export of synthetic-tiny by one of another checkpoint, killed after one graph (old export
    intact) or right after the swap (new export complete); never graphs of two checkpoints under one manifest."""
    _, state = tiny_state(seed=3)
    torch.save(state, tmp_path / "b.pt")
    old = read_manifest(export_copy)
    r = run_lbdt(["export", str(tmp_path / "b.pt"), "--out", str(export_copy)], crash_at=crash_at)
    assert r.returncode == -signal.SIGKILL, r.stderr
    now = read_manifest(export_copy)  # every file agrees with the manifest
    assert (now["files"] == old["files"]) == (which == "old")
    assert now["source"] == (old["source"] if which == "old" else str(tmp_path / "b.pt"))
    OnnxRuntimeModel(export_copy)  # the backend runs the folder: it is one export
    assert len(leftovers(tmp_path)) == 1  # the killed run's staging folder (the new parts, or the old export)
    io.clean_stale(export_copy)  # what the next export (or install) on this name does first
    assert leftovers(tmp_path) == [] and read_manifest(export_copy) == now
