"""Sinks for a stream of `Prediction`s, and report writers.

* `save_mask_png`: one binary mask as a single-channel 8-bit PNG with values 0/255 (atomic).
* `PngMaskWriter`: `<root>/<video>/<expression or object>/<frame>.png` for every prediction.
* `SubmissionWriter`: an evaluation server's zip (Ref-YouTube-VOS: `Annotations/<video>/<exp_id>/<frame>.png`;
  MeViS: `<video>/<exp_id>/<frame>.png`).
* `format_metrics_table`: the metrics report as plain text (its JSON goes through `lbdt.io.write_json`).

Every file is written to a temporary name in the destination folder and moved into place with
`os.replace`, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from lbdt.errors import LBDTError
from lbdt.io import write_bytes
from lbdt.paths import check_name
from lbdt.types import Prediction, SampleMeta
from lbdt.visualize import VideoWriter, overlay, pick_color, upscale

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


class SubmissionWriter:
    """Sink: an evaluation server's submission zip, `<top><video>/<exp_id>/<frame>.png` (0/255, original size).

    `top` is the folder above the video folders (`Source.submission_top`: "Annotations/" for Ref-YouTube-VOS,
    "" for MeViS). exp_id is
    `meta.expression_id` (or `meta.object_id` when the former is empty, as in the original's
    `valid_new_pure.txt`). The zip is built under a temporary name and moved to `zip_path` by `close()`.
    Writing the same (video, expression, frame) twice raises `LBDTError`. `comment` becomes the zip's comment
    (e.g. what a partial zip lacks).
    """

    def __init__(self, *, zip_path: PathLike, top: str = "Annotations/", comment: str = ""):
        self.zip_path, self.top, self.comment = Path(zip_path), top, comment
        self._zip: zipfile.ZipFile | None = None  # opened on the first write (or by close, for an empty zip)
        self._tmp = ""
        self._closed = False
        self._names: set[str] = set()

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            self.zip_path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.zip_path.name}.", suffix=".tmp",
                                             dir=self.zip_path.parent)
            os.close(fd)
            self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)
            self._zip.comment = self.comment.encode("utf-8")[:65535]
        return self._zip

    def entry_name(self, meta: SampleMeta) -> str:
        video, group, frame = _layout_parts(meta, "submission zip")
        return f"{self.top}{video}/{group}/{frame}.png"

    def write(self, pred: Prediction) -> None:
        if self._closed:
            raise RuntimeError("write() after close()")
        name = self.entry_name(pred.meta)
        if name in self._names:
            raise LBDTError(f"{self.zip_path}: two predictions for {name}")
        self._names.add(name)
        self._open().writestr(name, mask_png_bytes(pred.mask))  # PNG is already compressed

    @property
    def count(self) -> int:
        return len(self._names)

    def close(self) -> None:
        if self._closed:
            return
        self._open().close()
        self._zip, self._closed = None, True
        os.replace(self._tmp, self.zip_path)

    def abort(self) -> None:
        """Discard the partial zip (nothing is written under `zip_path`)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        self._closed = True
        if self._tmp and os.path.exists(self._tmp):
            os.remove(self._tmp)


# ---------------------------------------------------------------- sinks for video predictions (VideoSegmenter)
# `lbdt predict`, `lbdt demo` and `lbdt serve` feed these with the predictions of `VideoSegmenter.segment_many`
# (one per sentence and frame; `Prediction.sentence_index` says which sentence); `drain` runs them.


def _frame_name(pred: Prediction, where: str) -> str:
    return check_name(pred.meta.frame_id, "frame id", where)


class SentenceMaskWriter:
    """Sink: sentence j's masks to `<root>/<folders[j]>/<frame>.png` (0/255, original size), each atomic."""

    def __init__(self, root: PathLike, folders: Sequence[str]):
        self.root, self.folders = Path(root), list(folders)

    def write(self, pred: Prediction) -> None:
        save_mask_png(self.root / self.folders[pred.sentence_index] / f"{_frame_name(pred, str(self.root))}.png",
                      pred.mask)

    def close(self) -> None:
        """Nothing is buffered; every mask is already on disk."""


class MaskZipWriter:
    """Sink: sentence j's masks as `<folders[j]>/<frame>.png` entries of one zip, which appears at `path` only
    when closed (`abort` leaves nothing)."""

    def __init__(self, path: PathLike, folders: Sequence[str]):
        self.path, self.folders = Path(path), list(folders)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)

    def write(self, pred: Prediction) -> None:
        self._zip.writestr(f"{self.folders[pred.sentence_index]}/{_frame_name(pred, str(self.path))}.png",
                           mask_png_bytes(pred.mask))  # PNG is already compressed

    def close(self) -> None:
        self._zip.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)


class OverlayVideoWriter:
    """Sink: one H.264 video of the frames with the masks of `sentences` (indices) tinted in their colours
    (`visualize.pick_color`) and `caption` drawn (a text, or a function of the frame's last prediction); a frame
    is written once all its sentences arrived. Needs the
    predictions' frames (`return_frames=True`). `scale` enlarges small frames (nearest) before drawing."""

    def __init__(self, path: PathLike, *, fps: float, sentences: Sequence[int],
                 caption: str | Callable[[Prediction], str] = "", scale: int = 1,
                 colors: Sequence[Sequence[int]] | None = None, alpha: float = 0.45):
        self.sentences, self.caption, self.scale = list(sentences), caption, int(scale)
        # one tint per entry of `sentences` (e.g. `visualize.highlight_colors` of the scene), else pick_color
        self.colors, self.alpha = list(colors) if colors is not None else None, alpha
        self.video = VideoWriter(path, fps=fps)
        self._frame: dict[int, Prediction] = {}

    def write(self, pred: Prediction) -> None:
        if pred.sentence_index not in self.sentences:
            return
        if pred.frame is None:
            raise ValueError("OverlayVideoWriter needs the frames: segment with return_frames=True")
        self._frame[pred.sentence_index] = pred
        if len(self._frame) < len(self.sentences):
            return
        image = upscale(pred.frame, self.scale)
        caption = self.caption(pred) if callable(self.caption) else self.caption
        for n, j in enumerate(self.sentences):
            last = n == len(self.sentences) - 1
            color = self.colors[n] if self.colors is not None else pick_color(j)
            image = overlay(image, upscale(self._frame[j].mask, self.scale), color=color, alpha=self.alpha,
                            outline=self.scale if self.scale > 1 else None, sentence=caption if last else "")
        self.video.write(image)
        self._frame = {}

    def close(self) -> None:
        self.video.close()

    def abort(self) -> None:
        self.video.abort()


class SentenceStats:
    """Sink: per sentence, the foreground fraction and score of every frame; the frame ids and sizes seen."""

    def __init__(self, sentences: Sequence[str]):
        self.sentences = list(sentences)
        self.foreground: list[list[float]] = [[] for _ in self.sentences]
        self.score: list[list[float]] = [[] for _ in self.sentences]
        self.frame_ids: list[str] = []
        self.sizes: set[tuple[int, int]] = set()

    def write(self, pred: Prediction) -> None:
        if pred.sentence_index == 0:
            self.frame_ids.append(pred.meta.frame_id)
            self.sizes.add(tuple(pred.meta.original_size))
        self.foreground[pred.sentence_index].append(float(pred.mask.mean()))
        self.score[pred.sentence_index].append(float(pred.score))

    def all_empty(self, j: int) -> bool:
        """Whether sentence j's mask was empty on every frame (False when no frame was seen)."""
        return bool(self.foreground[j]) and not any(self.foreground[j])

    def close(self) -> None:
        """Nothing to write: the caller reads the numbers."""


def drain(stream: Iterable[Iterable[Prediction]], sinks: Sequence[Any],
          after_frame: Callable[[int], None] | None = None) -> int:
    """Feed every prediction of `stream` (one list per frame) to every sink, then close them; on any error the
    sinks that can `abort` are aborted (no half-written file under its final name). `after_frame(n)` runs after
    the n-th frame. Returns the number of frames."""
    frames = 0  # lists of predictions (frames of a video, or samples of a dataset)
    try:
        for preds in stream:
            for pred in preds:
                for sink in sinks:
                    sink.write(pred)
            frames += 1
            if after_frame is not None:
                after_frame(frames)
    except BaseException:
        for sink in sinks:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()
        raise
    for sink in sinks:
        sink.close()
    return frames


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
