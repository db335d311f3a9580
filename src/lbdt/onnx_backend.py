"""Run a folder written by `lbdt export --format onnx` with ONNX Runtime, behind the `LBDT` streaming contract.

`OnnxRuntimeModel.encode_text(word_vectors, word_mask)` and `.segment(frame, ref_frame, text)` take and
return torch tensors like `LBDT.encode_text` / `LBDT.segment` (text features are an opaque
`OnnxTextFeatures`, batch 1 broadcasting over the frames), so `VideoSegmenter.from_pretrained(folder, backend="onnxruntime")`
runs the same pre- and post-processing as the PyTorch path. `load_exported` reads the manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lbdt.checkpoint import Runnable
from lbdt.download import file_sha256
from lbdt.errors import LBDTError
from lbdt.export import FORMAT, FORMAT_VERSION, MANIFEST, require
from lbdt.io import read_json
from lbdt.models.lbdt import check_frames, check_text_inputs
from lbdt.paths import check_name
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


MANIFEST_LIMIT = 1 << 20  # a manifest is a few kilobytes
_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an exported folder, checked field by field (types, ranges, file names) and against the
    folder's files (each one's size and sha256 as recorded): `LBDTError` naming the folder or the manifest field
    when it is not an export, or its parts do not agree (two exports mixed, files swapped or changed)."""
    if not isinstance(folder, (str, os.PathLike)) or str(folder).strip() == "":
        raise LBDTError(f"weights: expected an exported folder's path, got {folder!r}")
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LBDTError(f"{folder}: not an exported lbdt ONNX folder (no {MANIFEST}); make one with "
                        "`lbdt export WEIGHTS --format onnx --out DIR`")
    manifest = read_json(path, "ONNX manifest", max_bytes=MANIFEST_LIMIT)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LBDTError(f"{path}: not an lbdt ONNX manifest (format is not {FORMAT!r})")
    missing = [k for k in ("version", "size", "frame_gap", "max_words", "sides", "graphs", "word_vectors", "files")
               if k not in manifest]
    if missing:
        raise LBDTError(f"{path}: manifest lacks {', '.join(missing)}"
                        + ("; it was written by an older lbdt: export again" if missing == ["files"] else ""))
    _check_fields(manifest, path)
    _check_files(manifest, Path(folder), path)
    return manifest


def _field(manifest: dict, dotted: str, path: Path) -> Any:
    value: Any = manifest
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise LBDTError(f"{path}: field {dotted!r} is missing")
        value = value[key]
    return value


def _int_field(manifest: dict, dotted: str, path: Path, low: int, high: int | None = None) -> int:
    value = _field(manifest, dotted, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise LBDTError(f"{path}: field {dotted!r} must be an integer {bound}, got {value!r}")
    return value


def _name_field(manifest: dict, dotted: str, path: Path) -> str:
    value = _field(manifest, dotted, path)
    return check_name(value, "file name", f"{path}: field {dotted!r}")


def _check_fields(m: dict, path: Path) -> None:
    """Types and ranges of every field the backend reads, and their agreement (N and the word dimension of
    the graphs, the word table's files)."""
    version = _int_field(m, "version", path, 1)
    if version > FORMAT_VERSION:
        raise LBDTError(f"{path}: manifest version {version} is newer than this lbdt ({FORMAT_VERSION})")
    if version < FORMAT_VERSION:
        raise LBDTError(f"{path}: manifest version {version} (no file checksums) is older than this lbdt's "
                        f"({FORMAT_VERSION}): export again")
    size = _field(m, "size", path)
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise LBDTError(f"{path}: field 'size' must be [H, W] with positive integers, got {size!r}")
    _int_field(m, "frame_gap", path, 0)
    n = _int_field(m, "max_words", path, 1)
    low = _int_field(m, "sides.min", path, 1)
    _int_field(m, "sides.max", path, low)
    threshold = m.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise LBDTError(f"{path}: field 'threshold' must be a number in [0, 1], got {threshold!r}")
    for graph in ("text_encoder", "frame_model"):
        _name_field(m, f"graphs.{graph}.file", path)
    if m["graphs"]["text_encoder"]["file"] == m["graphs"]["frame_model"]["file"]:
        raise LBDTError(f"{path}: both graphs are named {m['graphs']['text_encoder']['file']!r}")
    shape = _field(m, "graphs.text_encoder.inputs.word_vectors.shape", path)
    if not (isinstance(shape, list) and len(shape) == 3 and shape[1] == n):
        raise LBDTError(f"{path}: field 'graphs.text_encoder.inputs.word_vectors.shape' must be [batch, {n}, dim] "
                        f"(max_words {n}), got {shape!r}")
    dim = _int_field({"dim": shape[2]}, "dim", path, 1)
    table = _field(m, "word_vectors", path)
    if not isinstance(table, dict):
        raise LBDTError(f"{path}: field 'word_vectors' must be an object, got {type(table).__name__}")
    if table.get("vocabulary") is not None or table.get("vectors") is not None:
        _name_field(m, "word_vectors.vocabulary", path)
        _name_field(m, "word_vectors.vectors", path)
        if _int_field(m, "word_vectors.dim", path, 1) != dim:
            raise LBDTError(f"{path}: field 'word_vectors.dim' is {table['dim']}, but the text graph takes {dim}")
    elif not isinstance(table.get("supply", ""), str):
        raise LBDTError(f"{path}: field 'word_vectors.supply' must be a string (a word table to supply)")
    files = _field(m, "files", path)
    if not isinstance(files, dict) or not files:
        raise LBDTError(f"{path}: field 'files' must map file names to their sha256 and bytes")
    for name, record in files.items():
        check_name(name, "file name", f"{path}: field 'files'")
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                and _SHA256.fullmatch(record["sha256"]) and isinstance(record.get("bytes"), int)
                and not isinstance(record["bytes"], bool) and record["bytes"] >= 0):
            raise LBDTError(f"{path}: field 'files.{name}' must be {{sha256: 64 hex digits, bytes: integer >= 0}}")
    named = [m["graphs"]["text_encoder"]["file"], m["graphs"]["frame_model"]["file"]]
    if table.get("vocabulary") is not None:
        named += [table["vocabulary"], table["vectors"]]
    unrecorded = [f for f in named if f not in files]
    if unrecorded:
        raise LBDTError(f"{path}: field 'files' records no checksum for {', '.join(unrecorded)}")


def _check_files(m: dict, folder: Path, path: Path) -> None:
    """Each recorded file is present, of its recorded size and sha256; a file holding another's recorded
    content is reported as swapped."""
    files = m["files"]
    by_digest = {record["sha256"]: name for name, record in files.items()}
    for name, record in files.items():
        file = folder / name
        if not file.is_file():
            raise LBDTError(f"{file}: missing (named by {path}); export again")
        size, digest = file.stat().st_size, file_sha256(file)
        if digest == record["sha256"] and size == record["bytes"]:
            continue
        other = by_digest.get(digest)
        if other is not None:
            raise LBDTError(f"{file}: holds what {path} records for {other} (files swapped or renamed); export again")
        raise LBDTError(f"{file}: {size:,} bytes, sha256 differs from what {path} records ({record['bytes']:,} bytes); "
                        "the folder mixes two exports or the file was changed: export again")


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
            names = [i.name for i in self.sessions[name].get_inputs()]
            wanted = list(graphs[name].get("inputs", {}))
            if names != wanted:
                raise LBDTError(f"{path}: takes inputs {', '.join(names)}, but {self.folder / MANIFEST} says "
                                f"{name} takes {', '.join(wanted)}")

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
        if vectors.dim != model.word_dim:
            raise LBDTError(f"{folder / table['vectors']}: {vectors.dim}-d word vectors, but the text graph takes "
                            f"{model.word_dim}")
    return Runnable(model=model, variant=str(m.get("variant", "")), source=str(folder), kind="onnx",
                    size=tuple(int(s) for s in m["size"]), frame_gap=int(m["frame_gap"]), max_words=model.max_words,
                    word_vectors=vectors, word_table="" if vectors is not None else str(table.get("supply") or ""),
                    card=dict(m.get("card") or {}))
