"""Run a folder written by `lbdt export --format onnx` with ONNX Runtime, behind the `LBDT` streaming contract.

`OnnxRuntimeModel.encode_text(word_vectors, word_mask)` and `.segment(frame, ref_frame, text)` take and
return torch tensors like `LBDT.encode_text` / `LBDT.segment` (text features are an opaque
`OnnxTextFeatures`, batch 1 broadcasting over the frames), so `VideoSegmenter.from_pretrained(folder, backend="onnxruntime")`
runs the same pre- and post-processing as the PyTorch path. `load_exported` reads the manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lbdt.checkpoint import Runnable
from lbdt.errors import LBDTError
from lbdt.export import FORMAT, FORMAT_VERSION, MANIFEST, require
from lbdt.models.lbdt import check_frames, check_text_inputs
from lbdt.words import WordVectors


@dataclass
class OnnxTextFeatures:
    """Encoded sentence(s) as the text graph returns them (numpy); batch 1 broadcasts over frames."""

    words: np.ndarray  # float32 [B,N,d]
    sentence: np.ndarray  # float32 [B,d]
    mask: np.ndarray  # bool [B,N]

    def __len__(self) -> int:
        return self.words.shape[0]

    def expand(self, batch: int) -> OnnxTextFeatures:
        """Batch-1 features repeated to `batch` (contiguous copies: ONNX Runtime takes dense arrays)."""
        if len(self) == batch:
            return self
        return OnnxTextFeatures(*(np.ascontiguousarray(np.broadcast_to(a, (batch, *a.shape[1:])))
                                  for a in (self.words, self.sentence, self.mask)))


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an exported folder; `LBDTError` naming the folder when it is not one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LBDTError(f"{folder}: not an exported lbdt ONNX folder (no {MANIFEST}); make one with "
                        "`lbdt export WEIGHTS --format onnx --out DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LBDTError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LBDTError(f"{path}: not an lbdt ONNX manifest (format is not {FORMAT!r})")
    missing = [k for k in ("size", "frame_gap", "max_words", "sides", "graphs", "word_vectors") if k not in manifest]
    if missing:
        raise LBDTError(f"{path}: manifest lacks {', '.join(missing)}")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise LBDTError(f"{path}: manifest version {manifest['version']} is newer than this lbdt ({FORMAT_VERSION})")
    return manifest


def _providers(device: torch.device, available: list[str]) -> list[Any]:
    """ONNX Runtime execution providers for `device` (CUDA only where this onnxruntime build has it)."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise LBDTError(f"ONNX Runtime here cannot run on {device} (providers: {', '.join(available)}); use --device cpu")


class OnnxRuntimeModel:
    """An exported folder's two graphs in ONNX Runtime sessions. `threads`: intra-op threads (default: as
    many as PyTorch uses, `torch.get_num_threads()`, so both backends compare on equal terms)."""

    def __init__(self, folder: str | os.PathLike, *, device: str | torch.device = "cpu", threads: int | None = None):
        ort = require("onnxruntime")
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.max_words = int(self.manifest["max_words"])
        graphs = self.manifest["graphs"]
        self.word_dim = int(graphs["text_encoder"]["inputs"]["word_vectors"]["shape"][2])
        sides = self.manifest["sides"]
        self._min_side, self._max_side = int(sides["min"]), int(sides["max"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
        providers = _providers(torch.device(device), ort.get_available_providers())
        self.threads = options.intra_op_num_threads
        self.sessions = {}
        for name in ("text_encoder", "frame_model"):
            path = self.folder / graphs[name]["file"]
            if not path.is_file():
                raise LBDTError(f"{path}: missing (named by {self.folder / MANIFEST})")
            try:
                self.sessions[name] = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types for bad files
                first = str(e).splitlines()[0] if str(e) else ""
                raise LBDTError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {first})") from None

    def encode_text(self, word_vectors: Tensor, word_mask: Tensor) -> OnnxTextFeatures:
        """word_vectors [B,N,300], word_mask [B,N] (1 = real token), N = the export's max_words."""
        check_text_inputs(word_vectors, word_mask, self.word_dim)
        if word_vectors.shape[1] != self.max_words:
            raise LBDTError(f"{self.folder}: the text graph takes exactly N = {self.max_words} word positions, "
                            f"got {word_vectors.shape[1]} (pad or cut the sentence to {self.max_words})")
        words, sentence, mask = self.sessions["text_encoder"].run(None, {
            "word_vectors": _numpy(word_vectors), "word_mask": _numpy(word_mask)})
        return OnnxTextFeatures(words=words, sentence=sentence, mask=mask)

    def segment(self, frame: Tensor, ref_frame: Tensor, text: OnnxTextFeatures) -> Tensor:
        """frame, ref_frame: ImageNet-normalised [B,3,H,W]; text of batch B or 1 -> logits [B,H,W] (CPU)."""
        check_frames(frame, ref_frame)
        b, (h, w) = frame.shape[0], frame.shape[-2:]
        if not (self._min_side <= h <= self._max_side and self._min_side <= w <= self._max_side):
            raise LBDTError(f"{self.folder}: exported for heights and widths {self._min_side}..{self._max_side}, "
                            f"got {h}x{w}")
        if len(text) not in (1, b):
            raise LBDTError(f"text features have batch {len(text)} but frames have batch {b}")
        text = text.expand(b)
        (logits,) = self.sessions["frame_model"].run(None, {
            "frame": _numpy(frame), "ref_frame": _numpy(ref_frame), "words": text.words,
            "sentence": text.sentence, "mask": text.mask})
        return torch.from_numpy(logits)

    def segment_many(self, frame: Tensor, ref_frame: Tensor, texts: Sequence[OnnxTextFeatures]) -> Tensor:
        """Logits [S,B,H,W] for S sentences over the same frames (the exported graph is per sentence: one run each)."""
        if len(texts) == 0:
            raise LBDTError("segment_many needs a non-empty sequence of text features (one per sentence)")
        return torch.stack([self.segment(frame, ref_frame, t) for t in texts])


def _numpy(x: Tensor) -> np.ndarray:
    """A dense float32 numpy array of `x` (ONNX Runtime reads plain row-major memory)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def load_exported(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> Runnable:
    """A `Runnable` whose model is an `OnnxRuntimeModel`, with the facts of the manifest (size, k, N, the
    folder's word table), as `load_pretrained` gives for a checkpoint. The graphs run in fp32."""
    model = OnnxRuntimeModel(folder, device=device)
    m, table = model.manifest, model.manifest["word_vectors"]
    vectors = None
    if table.get("vocabulary"):
        folder = Path(folder)
        vectors = WordVectors.load(folder / table["vocabulary"], folder / table["vectors"])
    return Runnable(model=model, variant=str(m.get("variant", "")), source=str(folder), kind="onnx",
                    size=tuple(int(s) for s in m["size"]), frame_gap=int(m["frame_gap"]), max_words=model.max_words,
                    word_vectors=vectors, word_table="" if vectors is not None else str(table.get("supply") or ""))
