"""Sentence → word vectors: the tokenizer of the original (docs/model.md, 'Language encoder') and
word-vector tables.

`WordVectors` is one interface for GloVe (read from the standard text format and cached in a fast
binary form) and for the download-free seeded table of the synthetic benchmark.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lbdt.errors import LBDTError
from lbdt.io import atomic_write, write_text
from lbdt.registry import is_known_table, word_table_cache

MAX_WORDS = 25  # N: the original's `phrase_len`
_SPLIT = re.compile(r"(\W+)")


def tokenize(sentence: str, max_len: int | None = MAX_WORDS, keep_separators: bool = True) -> list[str]:
    """Split a sentence into tokens as the original does (docs/model.md, 'Language encoder').

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


@dataclass(frozen=True)
class Coverage:
    """How much of a sentence a word table knows: the tokens the model sees and those it has no vector for."""

    tokens: tuple[str, ...]
    unknown: tuple[str, ...]  # in sentence order, repeats kept

    @property
    def unknown_fraction(self) -> float:
        """Share of the sentence's tokens that are unknown (they reach the model as zero vectors)."""
        return len(self.unknown) / len(self.tokens) if self.tokens else 0.0

    @property
    def none_known(self) -> bool:
        return bool(self.tokens) and len(self.unknown) == len(self.tokens)


def check_sentence(sentence: object, where: str) -> list[str]:
    """A referring sentence must be a string holding at least one word token ("?!" or "" holds none).
    Returns all its tokens (uncut), so that a caller tokenizes it once."""
    if not isinstance(sentence, str):
        raise LBDTError(f"{where}: sentence must be a string, got {type(sentence).__name__}")
    tokens = tokenize(sentence, None)
    if not any(_SPLIT.fullmatch(t) is None for t in tokens):
        raise LBDTError(f"{where}: empty sentence {sentence!r} (no words); describe the object to segment")
    return tokens


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
        return self.encode_tokens(tokenize(sentence, max_len, keep_separators), max_len)

    def encode_tokens(self, tokens: Sequence[str], max_len: int = MAX_WORDS) -> tuple[Tensor, Tensor]:
        """Tokens (already cut to `max_len`) → (word vectors float32 [max_len, dim], mask float32 [max_len])."""
        if len(tokens) > max_len:
            raise ValueError(f"{len(tokens)} tokens for {max_len} places")
        vectors = torch.zeros(max_len, self.dim)
        mask = torch.zeros(max_len)
        if tokens:
            vectors[: len(tokens)] = self.lookup(tokens)
            mask[: len(tokens)] = 1.0
        return vectors, mask

    def coverage(self, sentence: str, max_len: int = MAX_WORDS, keep_separators: bool = True) -> Coverage:
        """Which of the sentence's tokens (as `encode` cuts them) have no vector in this table."""
        return self.coverage_of(tokenize(sentence, max_len, keep_separators))

    def coverage_of(self, tokens: Sequence[str]) -> Coverage:
        """Which of these tokens have no vector in this table."""
        return Coverage(tuple(tokens), tuple(t for t in tokens if t not in self.index))

    # ---------------------------------------------------------------- constructors
    @classmethod
    def seeded(cls, words: Iterable[str], dim: int = 300, seed: int = 0) -> WordVectors:
        """A download-free table: each word's vector is drawn from N(0, 1/dim) seeded by (seed, word),
        so a word's vector does not depend on the rest of the vocabulary."""
        words = sorted(set(words))
        vecs = np.empty((len(words), dim), dtype=np.float32)
        for i, w in enumerate(words):
            digest = hashlib.sha256(f"{seed}\x00{w}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            vecs[i] = rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        return cls(words, vecs)

    @classmethod
    def from_glove(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                   dim: int = 300) -> WordVectors:
        """Read GloVe's text format (`word v1 … v_dim` per line, e.g. glove.840B.300d.txt), or the
        `.zip` it is distributed as (its one `.txt` member is streamed, never unpacked).

        The first read writes a binary cache (`<name>.vocab.txt` + `<name>.vectors.npy`, in
        `cache_dir` or next to the file); later reads memory-map it. A word may itself contain
        spaces (840B has a few), so the last `dim` fields are the vector.
        """
        path = Path(path)
        if not path.is_file():
            raise LBDTError(f"GloVe file not found: {path}")
        cache = Path(cache_dir) if cache_dir is not None else path.parent
        vec_file = cache / f"{path.name}.vectors.npy"
        vocab_file = cache_files(vec_file)[0]
        if vocab_file.is_file() and vec_file.is_file() and vec_file.stat().st_mtime >= path.stat().st_mtime:
            return cls.load(vocab_file, vec_file)
        try:
            return cls.build_cache(path, vec_file, dim=dim)
        except OSError:  # read-only location: the cache is an optimisation only
            with tempfile.TemporaryDirectory() as tmp:
                table = cls.build_cache(path, Path(tmp) / "table.vectors.npy", dim=dim)
                return cls(table.words, np.array(table.vectors))

    @classmethod
    def build_cache(cls, source: str | os.PathLike, vec_file: str | os.PathLike, *, dim: int = 300,
                    max_words: int | None = None, dtype: str = "float32") -> WordVectors:
        """Stream GloVe text (a `.txt`, or a `.zip` holding one) into the binary cache `vec_file`
        (+ its `.vocab.txt`, see `cache_files`) and return the table memory-mapped from it.

        `max_words` keeps only the first N lines (GloVe files are ordered by corpus frequency, so these are
        the N most frequent words); `dtype="float16"` halves the cache. Rows go to disk as they are read,
        so memory stays flat even for the 2.2 M words of glove.840B.300d (5.6 GB of text)."""
        source, vec_file = Path(source), Path(vec_file)
        if dtype not in ("float32", "float16"):
            raise LBDTError(f"word-vector dtype must be float32 or float16, got {dtype!r}")
        if max_words is not None and max_words < 1:
            raise LBDTError(f"max_words must be >= 1, got {max_words}")
        vocab_file = cache_files(vec_file)[0]
        vec_file.parent.mkdir(parents=True, exist_ok=True)
        words: list[str] = []
        with _glove_lines(source) as (where, lines), atomic_write(vec_file) as tmp:
            rows = tmp.with_name(tmp.name + ".rows")
            try:
                with open(rows, "wb") as raw:
                    for lineno, data in enumerate(lines, 1):
                        if max_words is not None and len(words) >= max_words:
                            break
                        try:
                            line = data.decode("utf-8").rstrip("\n").rstrip("\r")
                        except UnicodeDecodeError as e:
                            raise LBDTError(f"{where}:{lineno}: not UTF-8 text ({e.reason})") from None
                        if not line.strip():
                            continue
                        fields = line.rsplit(" ", dim)
                        if len(fields) != dim + 1 or fields[0] == "":
                            raise LBDTError(f"{where}:{lineno}: expected a word and {dim} numbers")
                        try:
                            with np.errstate(over="ignore"):  # an overflow becomes inf, reported below
                                row = np.asarray(fields[1:], dtype=np.float32)
                        except ValueError:
                            raise LBDTError(f"{where}:{lineno}: vector has a non-numeric value") from None
                        if not np.isfinite(row).all():
                            raise LBDTError(f"{where}:{lineno}: vector of {fields[0]!r} holds NaN or infinity")
                        raw.write(row.astype(dtype).tobytes())
                        words.append(fields[0])
                if not words:
                    raise LBDTError(f"{where}: no word vectors found")
                flat = np.memmap(rows, dtype=dtype, mode="r", shape=(len(words), dim))
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(words), dim))
                out[:] = flat
                out.flush()
                del out, flat
            finally:
                rows.unlink(missing_ok=True)
        write_text(vocab_file, "\n".join(words) + "\n")  # written last: the cache is complete
        return cls.load(vocab_file, vec_file)

    def save(self, vocab_file: str | os.PathLike, vec_file: str | os.PathLike) -> None:
        """Write the binary form atomically (vocabulary text + .npy matrix, float16 kept as float16)."""
        dtype = np.float16 if self.vectors.dtype == np.float16 else np.float32
        with atomic_write(vec_file) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(self.vectors, dtype=dtype))
        write_text(vocab_file, "\n".join(self.words) + "\n")  # written last: the cache is complete

    @classmethod
    def load(cls, vocab_file: str | os.PathLike, vec_file: str | os.PathLike) -> WordVectors:
        words = Path(vocab_file).read_text(encoding="utf-8").split("\n")[:-1]
        vectors = np.load(vec_file, mmap_mode="r", allow_pickle=False)
        return cls(words, vectors)

    @classmethod
    def load_cache(cls, vec_file: str | os.PathLike) -> WordVectors:
        """The table of a binary cache, named by its `.vectors.npy` file (see `cache_files`)."""
        vocab_file, vec_file = cache_files(vec_file)
        for f in (vocab_file, vec_file):
            if not f.is_file():
                raise LBDTError(f"{f}: word-vector cache file missing (rebuild it: `lbdt download` or from_glove)")
        return cls.load(vocab_file, vec_file)


def cache_files(vec_file: str | os.PathLike) -> tuple[Path, Path]:
    """(vocabulary file, vectors file) of the binary cache whose matrix is `<stem>.vectors.npy`."""
    vec_file = Path(vec_file)
    if not vec_file.name.endswith(".vectors.npy"):
        raise LBDTError(f"{vec_file}: a word-vector cache is named <name>.vectors.npy")
    return vec_file.with_name(vec_file.name[: -len(".vectors.npy")] + ".vocab.txt"), vec_file


@contextmanager
def _glove_lines(path: Path) -> Iterator[tuple[str, Iterable[str]]]:
    """(name for messages, byte lines) of a GloVe `.txt`, or of the one `.txt` member of a `.zip`, streamed."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:  # bytes: each line is decoded on its own, so an error names its line
            yield str(path), f
        return
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if m.endswith(".txt")]
        if len(members) != 1:
            raise LBDTError(f"{path}: expected one .txt member in the GloVe zip, found {len(members)}")
        with archive.open(members[0]) as raw:
            yield f"{path}:{members[0]}", raw

GLOVE_FILE = "glove.840B.300d.txt"
DATASET_TABLE = "word_vectors.300d.txt"  # a dataset root's own table (the synthetic benchmark writes one)


def resolve_word_vectors(explicit: str | os.PathLike | WordVectors | None = None, *,
                         embedded: WordVectors | None = None, table: str = "",
                         root: str | os.PathLike | None = None) -> WordVectors:
    """The one word-table resolver (docs/model.md, "Word vectors"). First match wins:

    1. `explicit`: what the user passed (`--word-vectors PATH`, `word_vectors=` in Python, or a table);
    2. `embedded`: the table inside the checkpoint (shipped and exported checkpoints carry theirs);
    3. `table`: the checkpoint's (or config's) reference — a `lbdt download` name (``glove-840b``: its installed
       cache), or a file name, looked up as given, then under `root` (a named file that is missing is an error);
    4. `root`: the dataset's own table — ``<root>/word_vectors.300d.txt``, then ``<root>/glove.840B.300d.txt``.

    Nothing found: an `LBDTError` listing what was tried.
    """
    if isinstance(explicit, WordVectors):
        return explicit
    if explicit is not None:
        return WordVectors.from_glove(explicit)
    if embedded is not None:
        return embedded
    tried: list[str] = []
    if table and is_known_table(table):  # a `lbdt download` name (glove-840b): its cache, else the root's GloVe
        cache = word_table_cache(table)
        if cache is not None:
            return WordVectors.load_cache(cache)
        tried.append(f"`lbdt download {table}` (not installed)")
        table = ""
    if table:  # a named file: as given, then under the root; missing, it is an error, never silently another table
        candidates = [Path(table).expanduser()]
        if root is not None and not Path(table).is_absolute():
            candidates.append(Path(root) / table)
    else:  # the dataset's own table
        candidates = [] if root is None else [Path(root) / DATASET_TABLE, Path(root) / GLOVE_FILE]
    for path in candidates:
        if path.is_file():
            return WordVectors.from_glove(path)
        tried.append(str(path))
    where = "; tried " + ", ".join(dict.fromkeys(tried)) if tried else ""
    raise LBDTError(f"no word vectors: the model needs a word table ({table or 'GloVe 840B, 300-d'}) and none was "
                    f"found{where}; pass --word-vectors PATH (or run `lbdt download glove-840b`)")
