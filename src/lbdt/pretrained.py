"""Load a ready-to-run model: the shipped synthetic checkpoint, our own checkpoints, the official LBDT
checkpoints, or a checksummed URL.

`load_pretrained(name_or_path)` returns an `LBDT` in eval mode whose `checkpoint_info` attribute (a
`CheckpointInfo`) carries what inference needs besides the weights: the input size, the reference-frame
gap k, the sentence length N and, when the checkpoint holds one, its word-vector table. `VideoSegmenter`
reads it. Every file is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lbdt.atomic import save_torch
from lbdt.data.text import MAX_WORDS, WordVectors
from lbdt.errors import LBDTError
from lbdt.models.lbdt import LBDT

# name -> file inside the package's `weights/` folder
SHIPPED = {"synthetic-tiny": "synthetic_tiny.pt"}
# reference-frame gap k for a user video (raw frames at 25-30 fps) by training dataset; spec §2.6
# (Ref-YouTube-VOS stores every 5th raw frame and uses the previous stored one, i.e. 5 raw frames).
FRAME_GAP_BY_DATASET = {"a2d": 6, "jhmdb": 5, "ytvos": 5}
DEFAULT_FRAME_GAP = 6
DEFAULT_SIZE = (320, 320)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about how to run its model."""

    source: str  # where the weights came from (path, URL or shipped name)
    kind: str  # "lbdt" (our format) | "official" (dzh19990407/LBDT state dict)
    variant: str  # e.g. "lbdt4", "tiny"
    dataset: str = ""  # on-disk format it was trained on (a2d | jhmdb | ytvos), "" when unknown
    size: tuple[int, int] = DEFAULT_SIZE  # (H, W) model input the model was trained at
    frame_gap: int = DEFAULT_FRAME_GAP  # k: reference frame t - k
    max_words: int = MAX_WORDS  # N: tokens per sentence
    word_vectors: WordVectors | None = None  # the table the model was trained with, when the checkpoint holds it
    word_vectors_hint: str = ""  # what to pass as word_vectors when the table is not inside (e.g. the GloVe file)


def shipped_path(name: str) -> Path:
    """Path of a checkpoint shipped inside the package (it may be absent in a source checkout)."""
    return Path(__file__).resolve().parent / "weights" / SHIPPED[name]


def load_pretrained(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> LBDT:
    """A model ready for inference (eval mode, on `device`), with `model.checkpoint_info` set.

    `name_or_path`: a shipped name (`"synthetic-tiny"`), a local file (our checkpoint, or an official
    LBDT-1/LBDT-4 A2D checkpoint told apart by its key names), or an `https://` URL with its sha256
    given as `...#sha256=<hex>` or as `sha256=` (downloaded once into `cache_dir`, default
    `$LBDT_CACHE` or `~/.cache/lbdt`).
    """
    source = str(name_or_path)
    if source in SHIPPED:
        path = shipped_path(source)
        if not path.is_file():
            raise LBDTError(f"shipped weights {source!r} are missing from this installation ({path}); "
                            "reproduce them with `lbdt train synthetic_tiny` (see docs/inference.md)")
    elif source.startswith(("https://", "http://")):
        path = download(source, sha256=sha256, cache_dir=cache_dir)
    else:
        path = Path(source)
        if not path.is_file():
            names = ", ".join(SHIPPED)
            raise LBDTError(f"{path}: no such checkpoint file (shipped weights: {names}; or a URL)")
    model, info = _load_file(path, source)
    model.checkpoint_info = info
    return model.to(device).eval()


def _load_file(path: Path, source: str) -> tuple[LBDT, CheckpointInfo]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torn file, a full pickle, not a torch file: all one error
        first = str(e).splitlines()[0] if str(e) else ""
        raise LBDTError(f"{path}: not a readable weights-only checkpoint ({type(e).__name__}: {first})") from None
    if isinstance(state, dict) and state.get("format") == "lbdt":
        return _from_lbdt(state, path, source)
    if _looks_official(state):
        from lbdt.models.checkpoint import load_official

        model = load_official(state)
        variant = f"lbdt{model.config['num_layers']}" + ("_r101" if model.config["backbone_depth"] == 101 else "")
        return model, CheckpointInfo(source=source, kind="official", variant=variant, dataset="a2d",
                                     word_vectors_hint="the GloVe file glove.840B.300d.txt (`--glove PATH`)")
    raise LBDTError(f"{path}: neither an lbdt checkpoint (no format: 'lbdt' entry) nor an official LBDT state dict")


def _looks_official(state: Any) -> bool:
    """An official `JointModel` state dict (wrapped / DDP-prefixed as `load_official` accepts it, i.e. as
    `read_state_dict` unwraps it): it has both stems `conv1_1`, `conv1_2`."""
    from lbdt.models.strict_load import read_state_dict

    if not isinstance(state, Mapping):  # a loaded str would be taken for a path
        return False
    try:
        keys = read_state_dict(state, what="checkpoint")
    except LBDTError:  # not a state dict of tensors
        return False
    return "conv1_1.weight" in keys and "conv1_2.weight" in keys


def _from_lbdt(state: dict, path: Path, source: str) -> tuple[LBDT, CheckpointInfo]:
    from lbdt.models.strict_load import load_strict

    if isinstance(state.get("version", 0), bool) or not isinstance(state.get("version", 0), int):
        raise LBDTError(f"{path}: checkpoint version must be an integer, got {state['version']!r}")
    if state.get("version", 0) > 1:
        raise LBDTError(f"{path}: checkpoint version {state['version']} is newer than this lbdt (1)")
    for key in ("model_config", "model"):
        if key not in state:
            raise LBDTError(f"{path}: lbdt checkpoint has no {key!r} entry")
    try:
        model = LBDT.from_config(state["model_config"])
    except TypeError as e:
        raise LBDTError(f"{path}: model_config does not fit this lbdt ({e})") from None
    load_strict(model, state["model"], source=str(path))
    data = dict(state.get("config", {}).get("data", {}))
    size = tuple(int(s) for s in data.get("size", DEFAULT_SIZE))
    gap = data.get("frame_gap")
    if gap is None:
        gap = FRAME_GAP_BY_DATASET.get(str(data.get("dataset", "")), DEFAULT_FRAME_GAP)
    table = state.get("word_vectors")
    vectors = None
    if table is not None:
        vectors = WordVectors(list(table["words"]), np.asarray(table["vectors"].float().numpy(), dtype=np.float32))
    elif data.get("synthetic_seed") is not None:  # trained on `lbdt synth` data: its seeded table is reproducible
        from lbdt.data.synth import vocabulary

        vectors = WordVectors.seeded(vocabulary(), dim=300, seed=int(data["synthetic_seed"]))
    hint = "" if vectors is not None else f"the word-vector file it was trained with ({data.get('word_vectors', 'GloVe')})"
    return model, CheckpointInfo(source=source, kind="lbdt", variant=str(state.get("variant", "")),
                                 dataset=str(data.get("dataset", "")), size=size,
                                 frame_gap=int(gap), max_words=int(data.get("max_words", MAX_WORDS)),
                                 word_vectors=vectors, word_vectors_hint=hint)


def export_pretrained(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                      word_vectors: WordVectors | None = None, vocabulary: list[str] | None = None) -> Path:
    """Write a slim inference checkpoint from a training one: model, model_config and config only
    (no optimizer state), plus the word-vector rows for `vocabulary` (all words of `word_vectors` when
    None) so that the file needs no separate table. Written atomically; returns `out`.

    This is how `src/lbdt/weights/synthetic_tiny.pt` is made from `runs/synthetic_tiny/best.pt`.
    """
    src = Path(checkpoint)
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LBDTError(f"{src}: no such checkpoint file") from None
    if not isinstance(state, dict) or state.get("format") != "lbdt":
        raise LBDTError(f"{src}: not an lbdt checkpoint")
    slim = {k: state[k] for k in ("format", "version", "variant", "model_config", "model", "config") if k in state}
    slim["source"] = f"exported from {src.name}"
    if word_vectors is not None:
        words = sorted(set(vocabulary)) if vocabulary is not None else list(word_vectors.words)
        slim["word_vectors"] = {"words": words, "vectors": word_vectors.lookup(words).contiguous()}
    out = Path(out)
    save_torch(slim, out)
    return out


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LBDT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lbdt"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None,
             timeout: float = 30.0) -> Path:
    """Download `url` into the cache once and return its path; the sha256 (`url#sha256=<hex>` or
    `sha256=`) is required and checked. The file appears under its final name only once verified."""
    url, _, fragment = url.partition("#")
    if fragment.startswith("sha256="):
        if sha256 is not None and sha256.lower() != fragment[7:].lower():
            raise LBDTError(f"{url}: two different sha256 checksums given")
        sha256 = fragment[7:]
    if sha256 is None or not _SHA256.fullmatch(sha256):
        raise LBDTError(f"{url}: a URL needs its sha256 checksum (64 hex digits), as URL#sha256=<hex> or sha256=")
    sha256 = sha256.lower()
    name = os.path.basename(urllib.request.urlparse(url).path) or "weights.pt"
    target = _cache_root(cache_dir) / "weights" / f"{sha256[:16]}-{name}"
    if target.is_file() and _file_sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise LBDTError(f"{url}: checksum mismatch (got sha256 {digest.hexdigest()}, expected {sha256}); "
                            "the file was not kept")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise LBDTError(f"{url}: cannot download ({reason}); offline? download it yourself and pass the local path") \
            from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
