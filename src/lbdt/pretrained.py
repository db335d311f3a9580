"""Weights by name: the shipped synthetic checkpoint, our own checkpoints, the official LBDT checkpoints, or
a checksummed URL, each loaded into a `Runnable` (`lbdt.checkpoint`): the model in eval mode plus the facts
needed to run it (input size, reference-frame gap k, sentence length N, word table, model card).

Every file is read with `torch.load(weights_only=True)`; our format is read and written only through
`lbdt.checkpoint`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lbdt.checkpoint import (
    Runnable,
    make_state,
    read_checkpoint,
    runnable_from_state,
    save_checkpoint,
    validate_state,
)
from lbdt.download import fetch_url, file_sha256, verify_checksum
from lbdt.errors import LBDTError
from lbdt.io import load_weights
from lbdt.models.official import load_official
from lbdt.models.strict_load import read_state_dict
from lbdt.paths import check_output_file
from lbdt.registry import KNOWN, home, load_card, resolve_installed
from lbdt.runtime import resolve_device
from lbdt.words import WordVectors

# name -> file inside the package's `weights/` folder
SHIPPED = {"synthetic-tiny": "synthetic_tiny.pt"}
OFFICIAL_WORD_TABLE = "glove-840b"  # the official checkpoints were trained on GloVe 840B (300-d)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def shipped_path(name: str) -> Path:
    """Path of a checkpoint shipped inside the package (it may be absent in a source checkout)."""
    return Path(__file__).resolve().parent / "weights" / SHIPPED[name]


def load_pretrained(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Runnable:
    """A `Runnable` (model in eval mode on `device`, with its run facts).

    `name_or_path`: a shipped name (`"synthetic-tiny"`), a local file (our checkpoint, or an official
    LBDT-1/LBDT-4 A2D checkpoint told apart by its key names), or an `https://` URL with its sha256
    given as `...#sha256=<hex>` or as `sha256=` (downloaded once into `cache_dir`, default
    `$LBDT_HOME` or `~/.cache/lbdt`), or a name installed by `lbdt download` (`official-lbdt4`).
    """
    source = str(name_or_path)
    installed = resolve_installed(source)  # the checkpoint of an entry installed by `lbdt download`
    if installed is not None:
        path = installed
    elif source in SHIPPED:
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
    runnable = _load_file(path, source).to(resolve_device(device))
    if not runnable.card and (installed is not None or source in SHIPPED):
        runnable.card = card_of(source)  # the card shipped for a known name
    return runnable


def card_of(weights: str | os.PathLike) -> dict:
    """The card of a weights name (known or shipped) or of a checkpoint file that stores one."""
    name = str(weights)
    if name in KNOWN or not Path(name).exists():
        return KNOWN[name].card if name in KNOWN else load_card(name)
    card = read_checkpoint(name).get("card")
    if not card:
        raise LBDTError(f"{name}: this checkpoint stores no model card")
    return dict(card)


def _load_file(path: Path, source: str) -> Runnable:
    state = load_weights(path)
    if isinstance(state, Mapping) and "format" in state:
        return runnable_from_state(validate_state(state, str(path)), where=str(path), source=source)
    if _looks_official(state):
        return _official_runnable(state, source)
    raise LBDTError(f"{path}: neither an lbdt checkpoint (no format: 'lbdt' entry) nor an official LBDT state dict")


def _official_runnable(state: Any, source: str) -> Runnable:
    """An official A2D checkpoint: 320×320 input, k = 6, N = 25 words of GloVe 840B."""
    model = load_official(state)
    variant = f"lbdt{model.config['num_layers']}" + ("_r101" if model.config["backbone_depth"] == 101 else "")
    return Runnable(model=model, variant=variant, source=source, kind="official", dataset="a2d",
                    word_table=OFFICIAL_WORD_TABLE)


def _looks_official(state: Any) -> bool:
    """An official `JointModel` state dict (wrapped / DDP-prefixed as `load_official` accepts it, i.e. as
    `read_state_dict` unwraps it): it has both stems `conv1_1`, `conv1_2`."""
    if not isinstance(state, Mapping):  # a loaded str would be taken for a path
        return False
    try:
        keys = read_state_dict(state, what="checkpoint")
    except LBDTError:  # not a state dict of tensors
        return False
    return "conv1_1.weight" in keys and "conv1_2.weight" in keys


def convert_official_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                                card: Mapping[str, Any] | None = None) -> Runnable:
    """Convert an official checkpoint file into an lbdt checkpoint (strict; written atomically); returns it as a
    `Runnable`. The converted file records its source, its word table (GloVe 840B, by name) and `card`."""
    check_output_file(dst, "OUT.pt")  # the CLI's name for it, as predict's --out
    state = load_weights(src)
    if not _looks_official(state):
        raise LBDTError(f"{src}: not an official LBDT state dict (no conv1_1 / conv1_2 stems)")
    runnable = _official_runnable(state, f"official LBDT checkpoint {Path(src).name}")
    data = {"dataset": runnable.dataset, "size": list(runnable.size), "frame_gap": runnable.frame_gap,
            "max_words": runnable.max_words}
    save_checkpoint(make_state(runnable.model, variant=runnable.variant, config={"data": data},
                               source=runnable.source, card=card, word_table=runnable.word_table), dst)
    runnable.card = dict(card or {})
    return runnable


def export_pretrained(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                      word_vectors: WordVectors | None = None, vocabulary: list[str] | None = None,
                      card: Mapping[str, Any] | None = None) -> Path:
    """Write a slim inference checkpoint from a training one: model, model_config and config only
    (no optimizer state), plus the word-vector rows for `vocabulary` (all words of `word_vectors` when
    None) so that the file needs no separate table. Written atomically; returns `out`.

    This is how `src/lbdt/weights/synthetic_tiny.pt` is made from `runs/synthetic_tiny/best.pt`.
    """
    src = Path(checkpoint)
    state = read_checkpoint(src)
    runnable = runnable_from_state(state, where=str(src), source=str(src))
    table = None
    if word_vectors is not None:
        words = sorted(set(vocabulary)) if vocabulary is not None else list(word_vectors.words)
        table = WordVectors(words, word_vectors.lookup(words).numpy())
    slim = make_state(runnable.model, variant=runnable.variant, config=state.get("config"),
                      source=f"exported from {src.name}", card=card if card is not None else state.get("card"),
                      word_vectors=table if table is not None else runnable.word_vectors,
                      word_table=None if table is not None or runnable.word_vectors is not None
                      else runnable.word_table or None)
    out = Path(out)
    save_checkpoint(slim, out)
    return out


def download(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
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
    name = os.path.basename(urllib.parse.urlparse(url).path) or "weights.pt"
    target = (Path(cache_dir) if cache_dir is not None else home()) / "weights" / f"{sha256[:16]}-{name}"
    if target.is_file() and file_sha256(target) == sha256:
        return target
    fetched = fetch_url(url, target.with_name(f".{target.name}.download"), progress=False)
    try:
        verify_checksum(fetched, sha256=sha256, what=url)
    except LBDTError:
        fetched.unlink()
        raise
    os.replace(fetched, target)
    return target
