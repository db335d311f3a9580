"""`lbdt export --format onnx`: a checkpoint as two ONNX graphs plus a JSON manifest, runnable without PyTorch.

The folder written by `export_onnx`:

* `text_encoder.onnx`: `word_vectors` float32 [B,N,300] + `word_mask` float32 [B,N] (1 = real token)
  → `words` float32 [B,N,d], `sentence` float32 [B,d], `mask` bool [B,N]; N is fixed (the checkpoint's).
* `frame_model.onnx`: `frame`, `ref_frame` float32 [B,3,H,W] (ImageNet-normalised) + the three text
  outputs (batch B) → `logits` float32 [B,H,W]; B, H and W are dynamic (H, W multiples of 32, 64..4096).
* `lbdt_onnx.json`: the manifest (`MANIFEST`): inputs, outputs, shapes, size, k, N, normalisation,
  threshold, the word table to use.
* `words.txt` + `vectors.npy`: the word-vector table, when the checkpoint holds one (else the manifest
  names the table to supply).

Graphs come from `torch.onnx.export(..., dynamo=True)` with the MultiheadAttention fast path off (its fused
kernel has no ONNX form) and are checked with `onnx.checker` before they appear under their final names.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from lbdt import __version__
from lbdt.checkpoint import Runnable
from lbdt.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lbdt.errors import LBDTError
from lbdt.io import atomic_write, write_text
from lbdt.models.lbdt import LBDT, STRIDE
from lbdt.models.text_encoder import TextFeatures
from lbdt.pretrained import load_pretrained
from lbdt.words import MAX_WORDS

MANIFEST = "lbdt_onnx.json"
TEXT_GRAPH = "text_encoder.onnx"
FRAME_GRAPH = "frame_model.onnx"
VOCAB_FILE = "words.txt"
VECTORS_FILE = "vectors.npy"
FORMAT = "lbdt-onnx"
FORMAT_VERSION = 1
THRESHOLD = 0.5  # the predictor's default: mask = sigmoid(logits) > threshold
MIN_SIDE, MAX_SIDE = 2 * STRIDE, 128 * STRIDE  # exported H, W range (the trace needs res5 of at least 2x2)
_EXAMPLE_BATCH, _EXAMPLE_SIZE = 2, (2 * STRIDE, 3 * STRIDE)  # tracing inputs: H != W, B > 1 keep them symbolic


def require(module: str) -> ModuleType:
    """Import an optional ONNX package, or raise a one-line `LBDTError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LBDTError(f"the ONNX backend needs the optional package {module!r}: pip install 'lbdt[onnx]'") from None


class _TextGraph(nn.Module):
    """The text encoder as a graph: (word_vectors, word_mask) -> (words, sentence, mask)."""

    def __init__(self, model: LBDT) -> None:
        super().__init__()
        self.model = model

    def forward(self, word_vectors: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        text = self.model.text_encoder(word_vectors, word_mask)
        return text.words, text.sentence, text.mask


class _FrameGraph(nn.Module):
    """The per-frame model as a graph: (frame, ref_frame, words, sentence, mask) -> logits."""

    def __init__(self, model: LBDT) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: Tensor, ref_frame: Tensor, words: Tensor, sentence: Tensor, mask: Tensor) -> Tensor:
        return self.model.segment(frame, ref_frame, TextFeatures(words=words, sentence=sentence, mask=mask))


def _checkpoint_facts(weights: LBDT | str | os.PathLike) -> tuple[LBDT, Any]:
    """The model and what its checkpoint says about running it (`.source`, `.variant`, `.size`,
    `.frame_gap`, `.max_words`, `.word_vectors`, `.word_table`, ...): the one place that reads them.
    An in-memory `LBDT` gets the defaults `VideoSegmenter` uses for one."""

    if isinstance(weights, LBDT):  # a copy: the caller's model keeps its device and mode
        return copy.deepcopy(weights).cpu().eval(), Runnable(model=weights, variant="", source="in-memory model",
                                                             kind="in-memory")
    runnable = load_pretrained(weights)
    return runnable.model, runnable


@contextlib.contextmanager
def _exporting() -> Iterator[None]:
    """MultiheadAttention without its fused inference kernel (no ONNX form) and the exporter's internal
    warnings and log lines (deprecations, optimizer notes) silenced; all restored on exit."""
    before = torch.backends.mha.get_fastpath_enabled()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    torch.backends.mha.set_fastpath_enabled(False)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_graph(module: nn.Module, args: tuple[Tensor, ...], path: Path, *, input_names: list[str],
                  output_names: list[str], dynamic_shapes: dict[str, dict[int, Any]]) -> int:
    """Export `module` to `path` (atomically, checked by `onnx.checker` first); returns the opset."""
    onnx = require("onnx")
    with _exporting(), torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
    with atomic_write(path) as tmp:
        program.save(tmp, external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
    return next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))


def export_onnx(weights: LBDT | str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Export `weights` (anything `load_pretrained` accepts, or an `LBDT`) to `out_dir`; returns the manifest.

    Files (see the module docstring) are written atomically, the manifest last; `out_dir` is created.
    """
    for package in ("onnx", "onnxscript"):  # the checker; the exporter's backend
        require(package)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LBDTError(f"{out}: exists and is not a folder")
    model, info = _checkpoint_facts(weights)
    model = model.to("cpu").eval()
    n_words = int(info.max_words or MAX_WORDS)
    word_dim = int(model.word_dim)
    d_text = int(model.config["text_hidden"])
    out.mkdir(parents=True, exist_ok=True)

    gen = torch.Generator().manual_seed(0)
    b, (h, w) = _EXAMPLE_BATCH, _EXAMPLE_SIZE
    word_vectors = torch.randn(b, n_words, word_dim, generator=gen)
    word_mask = torch.ones(b, n_words)
    batch = torch.export.Dim("batch")
    opset = _export_graph(_TextGraph(model).eval(), (word_vectors, word_mask), out / TEXT_GRAPH,
                          input_names=["word_vectors", "word_mask"], output_names=["words", "sentence", "mask"],
                          dynamic_shapes={"word_vectors": {0: batch}, "word_mask": {0: batch}})
    with torch.no_grad():
        text = model.text_encoder(word_vectors, word_mask)
    rows = torch.export.Dim("rows", min=MIN_SIDE // STRIDE, max=MAX_SIDE // STRIDE)  # H = 32 rows
    cols = torch.export.Dim("cols", min=MIN_SIDE // STRIDE, max=MAX_SIDE // STRIDE)
    image = {0: batch, 2: STRIDE * rows, 3: STRIDE * cols}
    frame = torch.randn(b, 3, h, w, generator=gen)
    _export_graph(_FrameGraph(model).eval(), (frame, frame.flip(0), text.words, text.sentence, text.mask),
                  out / FRAME_GRAPH, input_names=["frame", "ref_frame", "words", "sentence", "mask"],
                  output_names=["logits"],
                  dynamic_shapes={"frame": image, "ref_frame": image, "words": {0: batch}, "sentence": {0: batch},
                                  "mask": {0: batch}})

    if info.word_vectors is not None:
        info.word_vectors.save(out / VOCAB_FILE, out / VECTORS_FILE)
        table: dict[str, Any] = {"vocabulary": VOCAB_FILE, "vectors": VECTORS_FILE, "dim": info.word_vectors.dim}
    else:
        table = {"vocabulary": None, "vectors": None, "dim": word_dim,
                 "supply": info.word_table or "glove-840b"}  # a `lbdt download` name or a file to pass
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_by": f"lbdt {__version__}, torch {torch.__version__}",
        "opset": opset,
        "source": str(info.source),
        "variant": str(info.variant),
        "size": [int(s) for s in info.size],
        "frame_gap": int(info.frame_gap),
        "max_words": n_words,
        "threshold": THRESHOLD,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                          "rule": "RGB resized bilinearly to size (aspect not kept), /255, then (x - mean) / std"},
        "postprocess": "probability = sigmoid(logits), resized bilinearly (half-pixel) to the frame's size; "
                       "mask = probability > threshold",
        "reference_frame": "frame t uses frame max(t - frame_gap, 0)",
        "sides": {"multiple_of": STRIDE, "min": MIN_SIDE, "max": MAX_SIDE},
        "word_vectors": {**table, "tokenizer": "lbdt.words.tokenize: strip, split on runs of non-word "
                         "characters keeping them, drop empty and single-space tokens, lower-case, drop a final "
                         "'.', keep the first max_words; unknown words and padding are zero vectors"},
        "graphs": {
            "text_encoder": {
                "file": TEXT_GRAPH,
                "inputs": {"word_vectors": {"dtype": "float32", "shape": ["batch", n_words, word_dim]},
                           "word_mask": {"dtype": "float32", "shape": ["batch", n_words], "meaning": "1 = real token"}},
                "outputs": {"words": {"dtype": "float32", "shape": ["batch", n_words, d_text]},
                            "sentence": {"dtype": "float32", "shape": ["batch", d_text]},
                            "mask": {"dtype": "bool", "shape": ["batch", n_words]}},
            },
            "frame_model": {
                "file": FRAME_GRAPH,
                "inputs": {"frame": {"dtype": "float32", "shape": ["batch", 3, "height", "width"]},
                           "ref_frame": {"dtype": "float32", "shape": ["batch", 3, "height", "width"]},
                           "words": {"dtype": "float32", "shape": ["batch", n_words, d_text]},
                           "sentence": {"dtype": "float32", "shape": ["batch", d_text]},
                           "mask": {"dtype": "bool", "shape": ["batch", n_words]}},
                "outputs": {"logits": {"dtype": "float32", "shape": ["batch", "height", "width"]}},
            },
        },
    }
    write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
