"""What lbdt knows it can install, and where installs live: the registry of known weights and word tables.

`KNOWN` is a table (one `KnownWeights` per entry): where each file comes from, its size, its checksum when
the publisher gives one, its license and its model card (`lbdt/cards/<name>.yaml`). `home()` is the install
folder (`$LBDT_HOME`, else `~/.cache/lbdt`); `installed`, `resolve_installed` and `word_table_cache` say what is
installed there. Fetching and installing is `lbdt.download`; this module reads only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lbdt.errors import LBDTError, did_you_mean
from lbdt.io import read_json
from lbdt.paths import check_name

HOME_ENV = "LBDT_HOME"
CHECKPOINT_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
GDRIVE = "gdrive:"


@dataclass(frozen=True)
class KnownWeights:
    """One downloadable file and what to make of it."""

    name: str
    kind: str  # "official" (authors' LBDT state dict) | "lbdt" (our checkpoint) | "glove" (zip/txt) | "file"
    filename: str  # name of the downloaded file
    urls: tuple[str, ...]  # tried in order: https URLs, or "gdrive:<file id>"
    size: str  # for people: "about 2.0 GB"
    license: str
    sha256: str | None = None  # full digest, when the publisher gives one
    sha256_prefix: str = ""  # a digest prefix the publisher gives (torchvision puts one in its file names)
    variant: str = ""  # for checkpoints: the model variant the file must hold
    word_vectors: str | None = None  # for checkpoints: name of the entry holding their word table
    settings: dict[str, Any] = field(default_factory=dict)  # for checkpoints: input size, k, N, dataset
    card_name: str = ""  # its card in lbdt/cards/ when not named like the entry
    min_bytes: int = 0  # the smallest plausible file (a checkpoint cannot be smaller than its fp16 tensors)
    max_bytes: int = 0  # a transfer is stopped past this many bytes (0: no limit)
    words: int | None = None  # word tables: the published table's word count (a full install must have it)

    @property
    def card(self) -> dict:
        return load_card(self.card_name or self.name)


_A2D = {"dataset": "a2d", "size": [320, 320], "frame_gap": 6, "max_words": 25}
KNOWN: dict[str, KnownWeights] = {w.name: w for w in (
    KnownWeights("official-lbdt4", "official", "a2d_lbdt4.pth", (f"{GDRIVE}12mI2jUwW3MtpODv58jnywcuTCDhqa956",),
                 size="about 0.4 GB", license="MIT", variant="lbdt4", word_vectors="glove-840b", settings=_A2D,
                 min_bytes=150_000_000, max_bytes=2_000_000_000),  # 94 M tensors: >= 189 MB even in fp16
    KnownWeights("official-lbdt1", "official", "a2d_lbdt1.pth", (f"{GDRIVE}19DcWamgrUAOVia03J2C7NRzkXASo4U_M",),
                 size="about 0.3 GB", license="MIT", variant="lbdt1", word_vectors="glove-840b", settings=_A2D,
                 min_bytes=100_000_000, max_bytes=2_000_000_000),
    KnownWeights("glove-840b", "glove", "glove.840B.300d.zip",
                 ("https://nlp.stanford.edu/data/glove.840B.300d.zip",
                  "https://huggingface.co/stanfordnlp/glove/resolve/main/glove.840B.300d.zip"),
                 size="about 2.0 GB zipped (5.6 GB of text, 2.2 M words); cache 2.6 GB, or e.g. 240 MB for "
                      "--max-words 400000 --fp16", license="ODC PDDL 1.0",
                 max_bytes=7_000_000_000, words=2_196_017),
    KnownWeights("imagenet-resnet50", "file", "resnet50-0676ba61.pth",
                 ("https://download.pytorch.org/models/resnet50-0676ba61.pth",),
                 size="about 98 MB", license="BSD-3-Clause", sha256_prefix="0676ba61",
                 max_bytes=200_000_000),
)}


def home() -> Path:
    """Where lbdt keeps downloads and installed weights: `$LBDT_HOME`, else `~/.cache/lbdt`."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lbdt"


def load_card(name: str) -> dict:
    """The model card shipped for `name` (`lbdt/cards/<name>.yaml`)."""
    card = resources.files("lbdt") / "cards" / f"{name}.yaml"
    if not card.is_file():
        raise LBDTError(f"no model card for {name!r}{did_you_mean(name, weights_names())} "
                        f"(known: {', '.join(sorted(KNOWN))}, synthetic-tiny)")
    return yaml.safe_load(card.read_text(encoding="utf-8"))


def format_card(card: dict) -> str:
    """A card as indented `key: value` lines (nested mappings one level deeper)."""
    return yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110).rstrip()


_SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_LIMIT = 1 << 20  # an install manifest is a few hundred bytes
# field -> allowed types (bool is never an int here)
_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "kind": (str,), "source": (str,), "sha256": (str,), "bytes": (int,), "files": (list,),
    "word_vectors": (str, type(None)), "max_words": (int, type(None)), "fp16": (bool,),
    "words": (int, type(None)), "verified": (str,), "installed": (str,),
}


def weights_names() -> list[str]:
    """Every weights name lbdt knows: the downloadable ones and the shipped one (for messages)."""
    return [*KNOWN, "synthetic-tiny"]


def unknown_weights(name: str) -> str:
    """The message for a weights name lbdt does not know: the names it knows, and the closest one."""
    return (f"unknown weights {name!r}{did_you_mean(name, weights_names())}; known: {', '.join(weights_names())} "
            "(`lbdt download --list`)")


def installed(name: str) -> dict | None:
    """The manifest of an installed entry (checked: its fields and types, its files present), or None when
    `name` is not installed. A damaged install is an `LBDTError` saying how to repair it."""
    folder = home() / name
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return None
    repair = f"reinstall with `lbdt download {name} --force`"
    try:
        data = read_json(manifest, "install manifest", max_bytes=MANIFEST_LIMIT)
    except LBDTError as e:
        raise LBDTError(f"{e}; {repair}") from None
    if not isinstance(data, dict):
        raise LBDTError(f"{manifest}: not an install manifest (a JSON {type(data).__name__}); {repair}")
    for key, types in _MANIFEST_FIELDS.items():
        if key not in data and key in ("words", "verified"):  # manifests written before these fields
            continue
        value = data.get(key)
        if key not in data or (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            got = "missing" if key not in data else f"a {type(value).__name__}"
            raise LBDTError(f"{manifest}: field {key!r} must be {' or '.join(t.__name__ for t in types)}, "
                            f"got {got}; {repair}")
    if data["name"] != name or not _SHA256.fullmatch(data["sha256"]) or data["bytes"] < 0:
        raise LBDTError(f"{manifest}: not the manifest of {name} (name {data['name']!r}, sha256 or bytes "
                        f"malformed); {repair}")
    for file in data["files"]:
        try:
            check_name(file, "file name", f"{manifest}: files")
        except LBDTError as e:
            raise LBDTError(f"{e}; {repair}") from None
        if not (folder / file).is_file():
            raise LBDTError(f"{folder / file}: missing from the install of {name}; {repair}")
    return data


def resolve_installed(name: str) -> Path | None:
    """For a known checkpoint name: its installed checkpoint (its word table is named inside, `word_table`).
    None when `name` is not a known checkpoint; LBDTError when it is known but not installed."""
    entry = KNOWN.get(name)
    if entry is None or entry.kind not in ("official", "lbdt"):
        return None
    if installed(name) is None:
        raise LBDTError(f"{name} is not installed: run `lbdt download {name}` ({entry.size}; "
                        f"`--from FILE` for a downloaded copy)")
    return home() / name / CHECKPOINT_FILE


def word_table_cache(name: str) -> Path | None:
    """The binary cache of word table `name` when it is a known table (`glove-840b`) and installed, else None
    (`lbdt.words.resolve_word_vectors` asks)."""
    entry = KNOWN.get(name)
    if entry is None or entry.kind != "glove" or installed(name) is None:
        return None
    return home() / name / f"{name}.vectors.npy"


def is_known_table(name: str) -> bool:
    entry = KNOWN.get(name)
    return entry is not None and entry.kind == "glove"


def format_list() -> str:
    """`lbdt download --list`: every known entry, its file, size and source, and what is installed where (the
    word count actually stored, how it was verified)."""
    lines = [f"known weights (install folder: {home()}, set ${HOME_ENV} to move it)"]
    for entry in KNOWN.values():
        manifest = installed(entry.name)
        if manifest is None:
            state = "not installed"
        else:
            words = manifest.get("words")
            extra = [f"{words:,} words" + (f" (--max-words {manifest['max_words']:,})" if manifest["max_words"]
                                           else "") if words is not None else "",
                     "fp16" if manifest.get("fp16") else "",
                     "unverified (no published checksum)" if manifest.get("verified", "").startswith("unverified")
                     else ""]
            state = "installed: " + str(home() / entry.name) + "".join(f", {x}" for x in extra if x)
        urls = ", ".join(u if not u.startswith(GDRIVE) else f"https://drive.google.com/file/d/{u[len(GDRIVE):]}"
                         for u in entry.urls)
        lines.append(f"  {entry.name:<18} {state}\n  {'':<18} file {entry.filename}, {entry.size}; {entry.license}; "
                     f"{urls}")
    return "\n".join(lines)
