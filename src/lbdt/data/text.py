"""Sentence → word vectors: the tokenizer of the original (spec §1.3) and word-vector tables.

`WordVectors` is one interface for GloVe (read from the standard text format and cached in a fast
binary form) and for the download-free seeded table of the synthetic benchmark.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from lbdt.atomic import atomic_write, write_text
from lbdt.errors import LBDTError

MAX_WORDS = 25  # N: the original's `phrase_len`
_SPLIT = re.compile(r"(\W+)")


def tokenize(sentence: str, max_len: Optional[int] = MAX_WORDS, keep_separators: bool = True) -> list[str]:
    """Split a sentence into tokens as the original does (spec §1.3).

    Strip; split on runs of non-word characters keeping the separators; drop empty tokens and
    tokens that are exactly one space; lower-case; drop a final "."; truncate to `max_len`.
    With `keep_separators=False` (not faithful) separator tokens such as ", " are dropped too.
    Returns only the real tokens (no padding).
    """
    parts = [t for t in _SPLIT.split(sentence.strip()) if t != "" and t != " "]
    tokens = [t.lower() for t in parts]
    if tokens and tokens[-1] == ".":
        tokens = tokens[:-1]
    if not keep_separators:
        tokens = [t for t in tokens if _SPLIT.fullmatch(t) is None]
    return tokens if max_len is None else tokens[:max_len]


def check_sentence(sentence: object, where: str) -> str:
    """A referring sentence must be a string holding at least one word token ("?!" or "" holds none)."""
    if not isinstance(sentence, str):
        raise LBDTError(f"{where}: sentence must be a string, got {type(sentence).__name__}")
    if not any(_SPLIT.fullmatch(t) is None for t in tokenize(sentence, None)):
        raise LBDTError(f"{where}: empty sentence {sentence!r} (no words); describe the object to segment")
    return sentence


class WordVectors:
    """A fixed word → vector table. Unknown words (and pads) get the zero vector."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray):
        vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if vectors.ndim != 2 or len(words) != vectors.shape[0]:
            raise LBDTError(f"WordVectors: need one vector per word, got {len(words)} words and vectors of "
                            f"shape {tuple(vectors.shape)}")
        if not np.issubdtype(vectors.dtype, np.number):
            raise LBDTError(f"WordVectors: vectors must be numbers, got dtype {vectors.dtype}")
        # a memory-mapped cache (`load`) was checked when `from_glove` built it; reading it all here would
        # defeat the memory map
        if not isinstance(vectors, np.memmap) and not np.isfinite(vectors).all():
            row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise LBDTError(f"WordVectors: the vector of {words[row]!r} (row {row}) holds NaN or infinity")
        self.words = list(words)
        self.vectors = vectors
        # later duplicates win, as in torchtext's GloVe
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def lookup(self, tokens: Sequence[str]) -> Tensor:
        """float32 [len(tokens), dim]; zero rows for unknown tokens."""
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        for i, tok in enumerate(tokens):
            j = self.index.get(tok)
            if j is not None:
                out[i] = self.vectors[j]
        return torch.from_numpy(out)

    def encode(self, sentence: str, max_len: int = MAX_WORDS, keep_separators: bool = True) -> tuple[Tensor, Tensor]:
        """Sentence → (word vectors float32 [max_len, dim], mask float32 [max_len], 1 = real token)."""
        tokens = tokenize(sentence, max_len, keep_separators)
        vectors = torch.zeros(max_len, self.dim)
        mask = torch.zeros(max_len)
        if tokens:
            vectors[: len(tokens)] = self.lookup(tokens)
            mask[: len(tokens)] = 1.0
        return vectors, mask

    # ---------------------------------------------------------------- constructors
    @classmethod
    def seeded(cls, words: Iterable[str], dim: int = 300, seed: int = 0) -> "WordVectors":
        """A download-free table: each word's vector is drawn from N(0, 1/dim) seeded by (seed, word),
        so a word's vector does not depend on the rest of the vocabulary."""
        words = sorted(set(words))
        vecs = np.empty((len(words), dim), dtype=np.float32)
        for i, w in enumerate(words):
            digest = hashlib.sha256(f"{seed}\x00{w}".encode("utf-8")).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            vecs[i] = rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        return cls(words, vecs)

    @classmethod
    def from_glove(cls, path: str | os.PathLike, cache_dir: Optional[str | os.PathLike] = None,
                   dim: int = 300) -> "WordVectors":
        """Read GloVe's text format (`word v1 … v_dim` per line, e.g. glove.840B.300d.txt).

        The first read writes a binary cache (`<name>.vocab.txt` + `<name>.vectors.npy`, in
        `cache_dir` or next to the file); later reads memory-map it. A word may itself contain
        spaces (840B has a few), so the last `dim` fields are the vector.
        """
        path = Path(path)
        if not path.is_file():
            raise LBDTError(f"GloVe file not found: {path}")
        cache = Path(cache_dir) if cache_dir is not None else path.parent
        vocab_file = cache / f"{path.name}.vocab.txt"
        vec_file = cache / f"{path.name}.vectors.npy"
        if vocab_file.is_file() and vec_file.is_file() and vec_file.stat().st_mtime >= path.stat().st_mtime:
            return cls.load(vocab_file, vec_file)
        words, rows = [], []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
                except UnicodeDecodeError as e:
                    raise LBDTError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") \
                        from None
                if not line.strip():
                    continue
                fields = line.rsplit(" ", dim)
                if len(fields) != dim + 1 or fields[0] == "":
                    raise LBDTError(f"{path}:{lineno}: expected a word and {dim} numbers")
                try:
                    row = np.asarray(fields[1:], dtype=np.float32)
                except ValueError:
                    raise LBDTError(f"{path}:{lineno}: vector has a non-numeric value") from None
                if not np.isfinite(row).all():
                    raise LBDTError(f"{path}:{lineno}: vector of {fields[0]!r} holds NaN or infinity")
                rows.append(row)
                words.append(fields[0])
        if not words:
            raise LBDTError(f"{path}: no word vectors found")
        table = cls(words, np.stack(rows))
        try:
            table.save(vocab_file, vec_file)
        except OSError:
            pass  # read-only location: the cache is an optimisation only
        return table

    def save(self, vocab_file: str | os.PathLike, vec_file: str | os.PathLike) -> None:
        """Write the binary form atomically (vocabulary text + .npy matrix)."""
        with atomic_write(vec_file) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(self.vectors, dtype=np.float32))
        write_text(vocab_file, "\n".join(self.words) + "\n")  # written last: the cache is complete

    @classmethod
    def load(cls, vocab_file: str | os.PathLike, vec_file: str | os.PathLike) -> "WordVectors":
        words = Path(vocab_file).read_text(encoding="utf-8").split("\n")[:-1]
        vectors = np.load(vec_file, mmap_mode="r", allow_pickle=False)
        return cls(words, vectors)
