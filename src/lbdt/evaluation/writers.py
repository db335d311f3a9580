"""Sinks for a stream of `Prediction`s, and report writers.

* `save_mask_png`: one binary mask as a single-channel 8-bit PNG with values 0/255 (atomic).
* `PngMaskWriter`: `<root>/<video>/<expression or object>/<frame>.png` for every prediction.
* `YTVOSSubmissionWriter`: the Ref-YouTube-VOS server zip, `Annotations/<video>/<exp_id>/<frame>.png`.
* `format_metrics_table`: the metrics report as plain text (its JSON goes through `lbdt.io.write_json`).

Every file is written to a temporary name in the destination folder and moved into place with
`os.replace`, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from lbdt.io import write_bytes
from lbdt.errors import LBDTError
from lbdt.paths import check_name
from lbdt.types import Prediction, SampleMeta

PathLike = Union[str, "os.PathLike[str]"]


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a mask `bool/{0,1} [H,W]` as a single-channel ("L") PNG with values 0 and 255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D [H,W], got shape {mask.shape}")
    pixels = np.where(mask.astype(bool), 255, 0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()



def save_mask_png(path: PathLike, mask: np.ndarray) -> None:
    """Write `mask` (bool or {0,1} `[H,W]`) to `path` as a 0/255 single-channel PNG, atomically."""
    write_bytes(Path(path), mask_png_bytes(mask))


def group_id(meta: SampleMeta) -> str:
    """Folder name under the video: the expression id where the dataset has one, else the object id."""
    return meta.expression_id or meta.object_id


def _layout_parts(meta: SampleMeta, where: str) -> tuple[str, str, str]:
    """(video, group, frame) of a prediction, each checked to be one plain path component: names come from
    data files and are checked where they are read; this is the writers' own check (defence in depth)."""
    return (check_name(meta.video_id, "video id", where), check_name(group_id(meta), "expression/object id", where),
            check_name(meta.frame_id, "frame id", where))


class PngMaskWriter:
    """Sink: every prediction's mask to `<root>/<video>/<expression or object>/<frame>.png` (0/255, original size).

    Without an expression id (A2D, J-HMDB) an object may be referred to by several sentences: the first
    sentence seen for a (video, object) writes under `<object>/`, the k-th other one under `<object>-s<k>/`,
    so no mask overwrites another.
    """

    def __init__(self, *, root: PathLike):
        self.root = Path(root)
        self.count = 0
        self._sentences: dict[tuple[str, str], list[str]] = {}

    def path_for(self, meta: SampleMeta) -> Path:
        video, folder, frame = _layout_parts(meta, f"mask writer under {self.root}")
        if not meta.expression_id:
            seen = self._sentences.setdefault((meta.video_id, meta.object_id), [])
            if meta.sentence not in seen:
                seen.append(meta.sentence)
            k = seen.index(meta.sentence)
            folder = folder if k == 0 else f"{folder}-s{k}"
        return self.root / video / folder / f"{frame}.png"

    def write(self, pred: Prediction) -> None:
        save_mask_png(self.path_for(pred.meta), pred.mask)
        self.count += 1

    def close(self) -> None:
        """Nothing is buffered; every mask is already on disk."""


class YTVOSSubmissionWriter:
    """Sink: the Ref-YouTube-VOS submission zip with `Annotations/` as its top folder.

    Entries are `Annotations/<video>/<exp_id>/<frame>.png` (0/255, original size), where exp_id is
    `meta.expression_id` (or `meta.object_id` when the former is empty, as in the original's
    `valid_new_pure.txt`). The zip is built under a temporary name and moved to `zip_path` by `close()`.
    Writing the same (video, expression, frame) twice raises `LBDTError`.
    """

    TOP = "Annotations/"  # folder above the video folders inside the zip

    def __init__(self, *, zip_path: PathLike):
        self.zip_path = Path(zip_path)
        self.zip_path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.zip_path.name}.", suffix=".tmp", dir=self.zip_path.parent)
        os.close(fd)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)
        self._names: set[str] = set()

    @classmethod
    def entry_name(cls, meta: SampleMeta) -> str:
        video, group, frame = _layout_parts(meta, "submission zip")
        return f"{cls.TOP}{video}/{group}/{frame}.png"

    def write(self, pred: Prediction) -> None:
        if self._zip is None:
            raise RuntimeError("write() after close()")
        name = self.entry_name(pred.meta)
        if name in self._names:
            raise LBDTError(f"{self.zip_path}: two predictions for {name}")
        self._names.add(name)
        self._zip.writestr(name, mask_png_bytes(pred.mask))  # PNG is already compressed

    @property
    def count(self) -> int:
        return len(self._names)

    def close(self) -> None:
        if self._zip is None:
            return
        self._zip.close()
        self._zip = None
        os.replace(self._tmp, self.zip_path)

    def abort(self) -> None:
        """Discard the partial zip (nothing is written under `zip_path`)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


class MeViSSubmissionWriter(YTVOSSubmissionWriter):
    """Sink: the MeViS server zip, `<video>/<exp_id>/<frame>.png` with the video folders at the zip's top level."""

    TOP = ""


def _format_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(float(value)) else f"{float(value):.4f}"
    return str(value)


def format_metrics_table(report: dict, *, title: str = "", labels: Mapping[str, str] | None = None) -> str:
    """Plain-text table of a (possibly nested) metrics report; nested keys are joined with '/'.

    With `labels` (metric key → meaning, matched on the last key component) a third column says what
    each number is.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, _format_value(node), (labels or {}).get(prefix.rsplit("/", 1)[-1], "")))

    walk("", report)
    key_w = max([len(k) for k, _, _ in rows] + [len("metric")])
    val_w = max([len(v) for _, v, _ in rows] + [len("value")])
    lines = [title] if title else []
    lines.append(f"{'metric':<{key_w}}  {'value':>{val_w}}" + ("  meaning" if labels else ""))
    lines.append(f"{'-' * key_w}  {'-' * val_w}" + ("  -------" if labels else ""))
    lines.extend(f"{k:<{key_w}}  {v:>{val_w}}" + (f"  {m}" if labels and m else "") for k, v, m in rows)
    return "\n".join(lines)
