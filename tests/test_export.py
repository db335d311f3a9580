"""`lbdt export --format onnx` and the ONNX Runtime backend: equal to PyTorch fp32, same masks, clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lbdt.cli import main
from lbdt.data.synth import make_clip
from lbdt.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lbdt.errors import LBDTError
from lbdt.export import MANIFEST, export_onnx, require
from lbdt.models.build import build_model
from lbdt.predictor import VideoSegmenter
from lbdt.pretrained import load_pretrained
from lbdt.words import WordVectors
from media import write_mp4
from test_predictor import responsive_tiny

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="ONNX extras not installed (pip install 'lbdt[onnx]')")
REL_TOL = 1e-4  # max |onnxruntime - torch| / max |torch| over the logits
# (batch, H, W) to run at: both differ from the export's tracing inputs (batch 2, 64x96)
RUN_SHAPES = [(1, 96, 64), (3, 128, 160)]


def responsive(model):
    """Shrink BatchNorm running variances so random-weight logits spread over a few units (see test_predictor)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.3)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """(random `tiny` model, its export folder) through the library function."""
    model = responsive_tiny()
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    export_onnx(model, out)
    return model, out


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
    """(plain fp32 `synthetic-tiny` model, its export folder) through `lbdt export`."""
    out = tmp_path_factory.mktemp("onnx") / "synthetic-tiny"
    assert main(["export", "synthetic-tiny", "--format", "onnx", "--out", str(out)]) == 0
    return load_pretrained("synthetic-tiny").model, out


def text_inputs(batch, n, seed=0):
    """Word vectors with a different sentence length per sample (1 word, all N, in between); pads are zero."""
    gen = torch.Generator().manual_seed(seed)
    vectors = torch.randn(batch, n, 300, generator=gen) / 300**0.5
    mask = torch.zeros(batch, n)
    for i in range(batch):
        mask[i, : [1, n, max(1, n // 2)][i % 3]] = 1
    return vectors * mask[..., None], mask


def assert_close_rel(got, want, rel=REL_TOL):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rel * scale, (np.abs(got - want).max(), scale)


@needs_onnx
@pytest.mark.parametrize("which", ["tiny", "synthetic-tiny"])
def test_logits_equal_pytorch_fp32_at_other_sizes_and_batches(which, tiny_export, shipped_export):
    from lbdt.onnx_backend import OnnxRuntimeModel

    model, folder = tiny_export if which == "tiny" else shipped_export
    ort_model = OnnxRuntimeModel(folder)
    n = ort_model.max_words
    for batch, h, w in RUN_SHAPES:
        gen = torch.Generator().manual_seed(batch)
        frame = torch.randn(batch, 3, h, w, generator=gen)
        ref = frame + 0.5 * torch.randn(batch, 3, h, w, generator=gen)
        vectors, mask = text_inputs(batch, n, seed=h)
        with torch.inference_mode():
            want_text = model.encode_text(vectors, mask)
            want = model(frame, ref, vectors, mask)
        text = ort_model.encode_text(vectors, mask)
        assert_close_rel(text.words, want_text.words)
        assert_close_rel(text.sentence, want_text.sentence)
        assert np.array_equal(text.mask, want_text.mask.numpy())
        got = ort_model.segment(frame, ref, text)
        assert got.shape == (batch, h, w) and got.dtype == torch.float32
        assert np.abs(want.numpy()).max() > 0.5  # logits that vary: the comparison is not between near-zeros
        assert_close_rel(got, want)


@needs_onnx
def test_padded_word_positions_are_masked_and_sentence_broadcasts(shipped_export):
    from lbdt.onnx_backend import OnnxRuntimeModel

    model, folder = shipped_export
    ort_model = OnnxRuntimeModel(folder)
    n = ort_model.max_words
    gen = torch.Generator().manual_seed(5)
    frame = torch.randn(2, 3, 64, 64, generator=gen)
    ref = torch.randn(2, 3, 64, 64, generator=gen)
    vectors = load_pretrained("synthetic-tiny").word_vectors.encode("the red circle moving left", max_len=n)[0][None]
    outputs = []
    for real in (3, 5):  # "moving left" (positions 3, 4) is padding in one case, real words in the other
        mask = torch.zeros(1, n)
        mask[0, :real] = 1
        with torch.inference_mode():
            want = model.segment(frame, ref, model.encode_text(vectors, mask))  # batch-1 sentence over 2 frames
        got = ort_model.segment(frame, ref, ort_model.encode_text(vectors, mask))
        assert_close_rel(got, want)
        outputs.append(got)
    assert (outputs[0] - outputs[1]).abs().max() > 0.1  # the mask is a live input of the exported graphs


@needs_onnx
def test_manifest_files_and_checked_graphs(shipped_export):
    import onnx

    from lbdt.onnx_backend import read_manifest

    _, folder = shipped_export
    info = load_pretrained("synthetic-tiny")
    m = read_manifest(folder)
    assert m["size"] == list(info.size) and m["frame_gap"] == info.frame_gap and m["max_words"] == info.max_words
    assert m["normalization"]["mean"] == list(IMAGENET_MEAN) and m["normalization"]["std"] == list(IMAGENET_STD)
    assert m["threshold"] == 0.5 and m["variant"] == "tiny"
    table = m["word_vectors"]
    loaded = WordVectors.load(folder / table["vocabulary"], folder / table["vectors"])
    assert loaded.words == info.word_vectors.words
    np.testing.assert_array_equal(loaded.vectors, info.word_vectors.vectors)
    for name, fixed in (("text_encoder", {1: info.max_words, 2: 300}), ("frame_model", {1: 3})):
        path = folder / m["graphs"][name]["file"]
        onnx.checker.check_model(str(path), full_check=True)
        graph = onnx.load(str(path)).graph
        first = graph.input[0].type.tensor_type.shape.dim
        assert first[0].dim_param and not first[0].dim_value  # dynamic batch
        for axis, size in fixed.items():
            assert first[axis].dim_value == size
        if name == "frame_model":
            assert first[2].dim_param and first[3].dim_param  # dynamic H, W
            assert [i.name for i in graph.input] == list(m["graphs"][name]["inputs"])
            assert [o.name for o in graph.output] == ["logits"]


@needs_onnx
def test_video_segmenter_masks_identical_over_a_synthetic_clip(shipped_export):
    _, folder = shipped_export
    clip = make_clip(4, frames=13, size=(96, 128))
    sentences = [o.sentence for o in clip.objects]
    torch_seg = VideoSegmenter.from_pretrained("synthetic-tiny", batch_size=4, precision="fp32")
    ort_seg = VideoSegmenter.from_pretrained(folder, backend="onnxruntime", batch_size=3)  # other batching, same results
    assert (ort_seg.size, ort_seg.frame_gap, ort_seg.max_words) == (torch_seg.size, torch_seg.frame_gap,
                                                                     torch_seg.max_words)
    want = list(torch_seg.segment_many(clip.frames, sentences, return_prob=True))
    got = list(ort_seg.segment_many(clip.frames, sentences, return_prob=True))
    assert len(got) == len(want) == 13
    foreground = 0.0
    for per_frame_got, per_frame_want in zip(got, want):
        for g, w in zip(per_frame_got, per_frame_want):
            np.testing.assert_allclose(g.prob, w.prob, atol=1e-4)
            assert np.array_equal(g.mask, w.mask)
            assert g.meta.ref_frame_id == w.meta.ref_frame_id
            foreground += w.mask.mean()
    assert foreground > 0  # the trained model finds the objects: the masks compared are not all empty


@needs_onnx
def test_predict_cli_onnxruntime_writes_the_same_masks(tmp_path, shipped_export):
    _, folder = shipped_export
    clip = make_clip(9, frames=10, size=(96, 128))
    write_mp4(tmp_path / "clip.mp4", list(clip.frames))
    sentence = clip.objects[0].sentence
    outs = {}
    for backend, weights in (("torch", "synthetic-tiny"), ("onnxruntime", str(folder))):
        outs[backend] = tmp_path / backend
        assert main(["predict", str(tmp_path / "clip.mp4"), "--text", sentence, "--weights", weights,
                     "--backend", backend, "--precision", "fp32", "--out", str(outs[backend]), "--no-overlay"]) == 0
    summary = json.loads((outs["onnxruntime"] / "summary.json").read_text())
    assert summary["model"]["backend"] == "onnxruntime" and summary["frames"] == 10
    pngs = sorted(p.relative_to(outs["torch"]) for p in outs["torch"].rglob("*.png"))
    assert len(pngs) == 10
    assert sorted(p.relative_to(outs["onnxruntime"]) for p in outs["onnxruntime"].rglob("*.png")) == pngs
    lit = 0
    for rel in pngs:
        a = np.asarray(Image.open(outs["torch"] / rel))
        b = np.asarray(Image.open(outs["onnxruntime"] / rel))
        assert np.array_equal(a, b), rel
        lit += int(a.any())
    assert lit > 0


@needs_onnx
def test_bad_inputs_give_one_line_errors(tmp_path, tiny_export, capsys):
    from lbdt.onnx_backend import OnnxRuntimeModel

    _, folder = tiny_export
    with pytest.raises(LBDTError, match="not an exported lbdt ONNX folder.*lbdt export"):
        VideoSegmenter.from_pretrained(tmp_path, backend="onnxruntime")
    with pytest.raises(LBDTError, match="unknown backend 'tensorrt'"):
        VideoSegmenter.from_pretrained(folder, backend="tensorrt")
    with pytest.raises(LBDTError, match="fp32 graphs; precision 'bf16'"):
        VideoSegmenter.from_pretrained(folder, backend="onnxruntime", precision="bf16")
    ort_model = OnnxRuntimeModel(folder)
    with pytest.raises(LBDTError, match=f"exactly N = {ort_model.max_words} word positions, got 7"):
        ort_model.encode_text(torch.ones(1, 7, 300), torch.ones(1, 7))
    with pytest.raises(LBDTError, match=r"no real token"):
        ort_model.encode_text(torch.ones(1, ort_model.max_words, 300), torch.zeros(1, ort_model.max_words))
    text = ort_model.encode_text(*text_inputs(1, ort_model.max_words))
    with pytest.raises(LBDTError, match="heights and widths 64..4096, got 32x64"):
        ort_model.segment(torch.zeros(1, 3, 32, 64), torch.zeros(1, 3, 32, 64), text)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{not json")
    with pytest.raises(LBDTError, match=f"{MANIFEST}: not valid JSON"):
        OnnxRuntimeModel(tmp_path / "bad")
    # the CLI: the default weights are a checkpoint name, not an exported folder -> one line, exit 2
    write_mp4(tmp_path / "clip.mp4", list(make_clip(0, frames=2, size=(64, 64)).frames))
    code = main(["predict", str(tmp_path / "clip.mp4"), "--text", "the red circle", "--backend", "onnxruntime",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "synthetic-tiny: not an exported lbdt ONNX folder" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(LBDTError, match="exists and is not a folder"):
        export_onnx(build_model("tiny"), tmp_path / "clip.mp4")


def test_missing_onnx_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(LBDTError, match=r"optional package 'onnxruntime': pip install 'lbdt\[onnx\]'"):
        require("onnxruntime")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(LBDTError, match=r"optional package 'onnx': pip install 'lbdt\[onnx\]'"):
        export_onnx(build_model("tiny"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


@needs_onnx
@pytest.mark.slow
def test_benchmark_onnxruntime_rows_next_to_the_fast_path():
    from lbdt.tools.benchmark import BenchmarkSettings, format_table, run_benchmark

    settings = BenchmarkSettings(model="tiny", size=(64, 64), precisions=("fp32",), batches=(1, 2), frames=0,
                                 warmup=1, repeats=1, matmul_sizes=(256,), loader_samples=0, onnxruntime=True)
    result = run_benchmark(settings)
    rows = {(r["path"], r["batch"]) for r in result["inference"]}
    assert rows == {(p, b) for p in ("plain", "fast", "onnxrt") for b in (1, 2)}
    assert result["onnxruntime"]["threads"] == torch.get_num_threads()
    assert all(r["frames_per_s"] > 0 for r in result["inference"])
    assert "onnxrt" in format_table(result)


@needs_onnx
@pytest.mark.slow
def test_lbdt4_export_equals_pytorch(tmp_path):
    from lbdt.onnx_backend import OnnxRuntimeModel

    torch.manual_seed(0)
    model = responsive(build_model("lbdt4"))
    export_onnx(model, tmp_path / "lbdt4")
    ort_model = OnnxRuntimeModel(tmp_path / "lbdt4")
    for batch, h, w in RUN_SHAPES:
        gen = torch.Generator().manual_seed(batch)
        frame = torch.randn(batch, 3, h, w, generator=gen)
        ref = frame + 0.5 * torch.randn(batch, 3, h, w, generator=gen)
        vectors, mask = text_inputs(batch, ort_model.max_words, seed=h)
        with torch.inference_mode():
            want = model(frame, ref, vectors, mask)
        got = ort_model.segment(frame, ref, ort_model.encode_text(vectors, mask))
        assert np.abs(want.numpy()).max() > 0.5
        assert_close_rel(got, want)


@needs_onnx
def test_docs_recipe_without_pytorch_gives_the_same_masks(shipped_export):
    """docs/export.md's numpy + Pillow + onnxruntime block, run as written, against VideoSegmenter."""
    import re
    from pathlib import Path

    _, folder = shipped_export
    doc = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.DOTALL) if "def segment_video" in b]
    assert "torch" not in block and "lbdt" not in block.replace("lbdt_onnx.json", "").replace("lbdt's", "")
    namespace: dict = {}
    exec(compile(block, "docs/export.md", "exec"), namespace)  # noqa: S102 -- our own documentation
    clip = make_clip(6, frames=9, size=(80, 112))  # not the model size: both resizes are exercised
    sentence = clip.objects[0].sentence
    got = list(namespace["segment_video"](folder, list(clip.frames), sentence))
    want = [p.mask for p in VideoSegmenter.from_pretrained(folder, backend="onnxruntime").segment(clip.frames, sentence)]
    assert len(got) == len(want) == 9
    assert sum(int(m.sum()) for m in want) > 0
    for g, w in zip(got, want):
        assert g.shape == w.shape == (80, 112)
        assert np.array_equal(g, w)
