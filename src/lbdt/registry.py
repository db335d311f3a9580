"""What lbdt knows it can install, and where installs live: the registry of known weights and word tables.

`KNOWN` is a table (one `KnownWeights` per entry): where each file comes from, its size, its checksum when
the publisher gives one, its license and its model card (`lbdt/cards/<name>.yaml`). `home()` is the install
folder (`$LBDT_HOME`, else `~/.cache/lbdt`); `installed`, `resolve_installed` and `word_table_cache` say what is
installed there. Fetching and installing is `lbdt.download`; this module reads only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lbdt.errors import LBDTError

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

    @property
    def card(self) -> dict:
        return load_card(self.card_name or self.name)


_A2D = {"dataset": "a2d", "size": [320, 320], "frame_gap": 6, "max_words": 25}
KNOWN: dict[str, KnownWeights] = {w.name: w for w in (
    KnownWeights("official-lbdt4", "official", "a2d_lbdt4.pth", (f"{GDRIVE}12mI2jUwW3MtpODv58jnywcuTCDhqa956",),
                 size="about 0.4 GB", license="MIT", variant="lbdt4", word_vectors="glove-840b", settings=_A2D),
    KnownWeights("official-lbdt1", "official", "a2d_lbdt1.pth", (f"{GDRIVE}19DcWamgrUAOVia03J2C7NRzkXASo4U_M",),
                 size="about 0.3 GB", license="MIT", variant="lbdt1", word_vectors="glove-840b", settings=_A2D),
    KnownWeights("glove-840b", "glove", "glove.840B.300d.zip",
                 ("https://nlp.stanford.edu/data/glove.840B.300d.zip",
                  "https://huggingface.co/stanfordnlp/glove/resolve/main/glove.840B.300d.zip"),
                 size="about 2.0 GB zipped (5.6 GB of text, 2.2 M words); cache 2.6 GB, or e.g. 240 MB for "
                      "--max-words 400000 --fp16", license="ODC PDDL 1.0"),
    KnownWeights("imagenet-resnet50", "file", "resnet50-0676ba61.pth",
                 ("https://download.pytorch.org/models/resnet50-0676ba61.pth",),
                 size="about 98 MB", license="BSD-3-Clause", sha256_prefix="0676ba61"),
)}


def home() -> Path:
    """Where lbdt keeps downloads and installed weights: `$LBDT_HOME`, else `~/.cache/lbdt`."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lbdt"


def load_card(name: str) -> dict:
    """The model card shipped for `name` (`lbdt/cards/<name>.yaml`)."""
    card = resources.files("lbdt") / "cards" / f"{name}.yaml"
    if not card.is_file():
        raise LBDTError(f"no model card for {name!r} (known: {', '.join(sorted(KNOWN))}, synthetic-tiny)")
    return yaml.safe_load(card.read_text(encoding="utf-8"))


def format_card(card: dict) -> str:
    """A card as indented `key: value` lines (nested mappings one level deeper)."""
    return yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110).rstrip()


def installed(name: str) -> dict | None:
    """The manifest of an installed entry, or None."""
    manifest = home() / name / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError:
        raise LBDTError(f"{manifest}: unreadable install manifest; reinstall with `lbdt download {name}`") from None


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
    """`lbdt download --list`: every known entry, its size and source, and where it is installed."""
    lines = [f"known weights (install folder: {home()}, set ${HOME_ENV} to move it)"]
    for entry in KNOWN.values():
        manifest = installed(entry.name)
        if manifest is None:
            state = "not installed"
        else:
            extra = [f"{manifest['max_words']} words" if manifest.get("max_words") else "",
                     "fp16" if manifest.get("fp16") else ""]
            state = "installed: " + str(home() / entry.name) + "".join(f", {x}" for x in extra if x)
        urls = ", ".join(u if not u.startswith(GDRIVE) else f"https://drive.google.com/file/d/{u[len(GDRIVE):]}"
                         for u in entry.urls)
        lines.append(f"  {entry.name:<18} {state}\n  {'':<18} {entry.size}; {entry.license}; {urls}")
    return "\n".join(lines)

