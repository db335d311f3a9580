"""Helpers shared by the `lbdt prepare-data` builders: file placement, resumable markers, checked readers.

Re-running a builder skips finished work: each finished video leaves a small JSON marker under
``<out>/.prepare/<dataset>/``, written last (atomically), so an interrupted video is redone from scratch
and a finished one is never decoded or linked again. List files are always rewritten atomically.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image
from tqdm import tqdm

from lbdt.errors import LBDTError
from lbdt.io import atomic_write, read_json

T = TypeVar("T")

MARKER_DIR = ".prepare"


@dataclass
class PrepareSummary:
    """What a builder did; `format()` is the summary the CLI prints."""

    dataset: str
    out: Path
    videos: dict[str, int] = field(default_factory=dict)  # split name -> videos written
    samples: dict[str, int] = field(default_factory=dict)  # list file name -> lines
    skipped: Counter = field(default_factory=Counter)  # reason -> count of skipped items
    reused: int = 0  # videos whose finished work was found and not redone
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth knowing that are not problems (e.g. renames)

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] += n

    def format(self) -> str:
        lines = [f"warning: {w}" for w in self.warnings]
        lines.append(f"prepared {self.dataset} in {self.out}")
        for split, n in self.videos.items():
            lines.append(f"  {split}: {n} videos")
        for name, n in self.samples.items():
            lines.append(f"  {name}: {n} samples")
        lines.append(f"  reused finished videos from an earlier run: {self.reused}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.skipped:
            lines.append("  skipped:")
            lines.extend(f"    {n} × {reason}" for reason, n in sorted(self.skipped.items()))
        return "\n".join(lines)


def progress(items: Iterable[T], desc: str, enabled: bool, total: int | None = None) -> Iterator[T]:
    """A tqdm bar over `items` (or the plain iterable when `enabled` is False)."""
    return iter(tqdm(items, desc=desc, total=total, unit="video", disable=not enabled, leave=False))


def place_file(src: Path, dst: Path, *, copy: bool) -> bool:
    """Put `src` at `dst`: a hard link (a symlink across file systems), or a copy if `copy`.

    Returns False when `dst` already holds a file of the same size (finished earlier), True otherwise.
    """
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if copy:
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)
        return True
    try:
        os.link(src, dst)
    except OSError:
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copyfile(src, dst)
    return True


def remove_tree(path: Path) -> None:
    """Delete an output folder (links or copies this tool made), if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def require_dir(path: Path, what: str) -> Path:
    """A folder the release must have: missing, it is an `LBDTError` (never an empty result)."""
    if not path.is_dir():
        raise LBDTError(f"{path}: {what} folder not found (is --raw the unpacked official release?)")
    return path


def marker_path(out: Path, dataset: str, split: str, video_id: str) -> Path:
    return out / MARKER_DIR / dataset / split / f"{video_id}.json"


def read_marker(path: Path) -> dict | None:
    """The marker's content, or None when absent or unreadable (the video is then redone)."""
    try:
        data = read_json(path, "marker")
    except LBDTError:
        return None
    return data if isinstance(data, dict) else None


def read_csv(path: Path, what: str, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header naming at least `columns`, as (line number, row) pairs.

    When the last header column is free text (a sentence), surplus fields of an unquoted row are
    joined back into it with commas.
    """
    if not path.is_file():
        raise LBDTError(f"{what} not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise LBDTError(f"{path}: malformed CSV header {header}; expected columns {list(columns)}")
            reader.fieldnames = header
            rows = []
            for row in reader:
                if None in row and header[-1] == columns[-1]:
                    row[header[-1]] = ",".join([row[header[-1]], *row.pop(None)])
                if None in row or any(row.get(c) is None for c in columns):
                    raise LBDTError(f"{path}:{reader.line_num}: malformed CSV row (expected {len(header)} fields)")
                rows.append((reader.line_num, {k: v.strip() for k, v in row.items()}))
            return rows
    except (csv.Error, UnicodeDecodeError) as e:
        raise LBDTError(f"{path}: malformed CSV ({e})") from None


def clean_sentence(text: str) -> str:
    """Collapse all whitespace (line breaks included) to single spaces."""
    return " ".join(text.split())


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise LBDTError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return h, w
