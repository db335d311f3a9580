"""Pictures of predictions: a tinted overlay with the mask contour and the sentence, a side-by-side strip
(frame | prediction | ground truth), and an overlay-video writer (PyAV, H.264, written atomically).
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lbdt.errors import LBDTError
from lbdt.io import atomic_write

COLORS = ((255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 32), (200, 96, 255), (32, 220, 220))


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool [H,W]: mask pixels with a 4-neighbour outside the mask (or the image border), thickened
    inwards to `width` pixels."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(max(1, width)):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def _caption(image: Image.Image, text: str) -> None:
    """Draw `text` (wrapped) on a dark band at the top of `image`, with PIL's default font."""
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(image)
    char_w = max(1, int(draw.textlength("M", font=font)))
    lines = textwrap.wrap(text, width=max(8, (image.width - 8) // char_w))[:3] or [""]
    line_h = int(font.getbbox("Mg")[3]) + 3
    band = Image.new("RGBA", (image.width, line_h * len(lines) + 6), (0, 0, 0, 140))
    image.paste(band, (0, 0), band)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * line_h), line, fill=(255, 255, 255), font=font)


def overlay(frame: np.ndarray, mask: np.ndarray, *, sentence: str = "", color: Sequence[int] = COLORS[0],
            alpha: float = 0.45) -> np.ndarray:
    """uint8 [H,W,3]: `frame` with `mask` (bool [H,W]) tinted in `color`, its contour drawn, `sentence` on top."""
    frame = np.asarray(frame, dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    if frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape[:2]} and mask {mask.shape} differ in size")
    out = frame.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * tint
    out[contour(mask, width=max(1, min(frame.shape[:2]) // 160))] = tint
    image = Image.fromarray(out.round().astype(np.uint8))
    if sentence:
        _caption(image, sentence)
    return np.asarray(image)


def side_by_side(rows: Sequence[Sequence[np.ndarray]], *, titles: Sequence[str] = (), heading: str = "",
                 gap: int = 4) -> np.ndarray:
    """uint8 strip: one row per frame, its panels left to right (uint8 [H,W,3] images or bool [H,W] masks,
    shown white on black); all panels of a row are resized to the first panel's height; `heading` is one
    line above everything, column `titles` are written above the first row."""
    rendered = []
    for row in rows:
        height = np.asarray(row[0]).shape[0]
        panels = []
        for panel in row:
            p = np.asarray(panel)
            p = np.repeat((p.astype(bool) * 255).astype(np.uint8)[:, :, None], 3, axis=2) if p.ndim == 2 else p
            if p.shape[0] != height:
                w = max(1, round(p.shape[1] * height / p.shape[0]))
                p = np.asarray(Image.fromarray(p).resize((w, height), Image.NEAREST))
            panels.append(p)
        rendered.append(panels)
    widths = [sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rendered]
    font = ImageFont.load_default()
    heading_h = 14 if heading else 0
    title_h = heading_h + (14 if titles else 0)
    canvas = Image.new("RGB", (max(widths), title_h + sum(r[0].shape[0] for r in rendered) + gap * (len(rendered) - 1)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if heading:
        draw.text((2, 1), heading, fill=(0, 0, 0), font=font)
    y = title_h
    for r, row in enumerate(rendered):
        x = 0
        for c, p in enumerate(row):
            canvas.paste(Image.fromarray(p), (x, y))
            if r == 0 and c < len(titles):
                draw.text((x + 2, heading_h + 1), titles[c], fill=(0, 0, 0), font=font)
            x += p.shape[1] + gap
        y += row[0].shape[0] + gap
    return np.asarray(canvas)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image (PNG/JPEG by extension) atomically."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise LBDTError(f"{path}: unknown image extension {path.suffix!r}")
    with atomic_write(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=image_format)


class VideoWriter:
    """Write RGB frames to an H.264 mp4 with PyAV. Frames go to a temporary file that `close()` moves
    into place, so an interrupted run never leaves a truncated video under the final name.
    Odd sizes are padded by one black row/column (yuv420p needs even sizes)."""

    def __init__(self, path: str | os.PathLike, *, fps: float = 25.0, crf: int = 23):


        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w")
        self._rate = Fraction(fps).limit_denominator(1001)
        self._crf = crf
        self._stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:

        frame = np.asarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self._crf)}
            self._size = (h, w)
        if (h, w) != self._size:
            frame = np.asarray(Image.fromarray(frame).resize((self._size[1], self._size[0]), Image.BILINEAR))
            h, w = self._size
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and move the file into place (nothing is written for zero frames)."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._container = None
        if self.count == 0:
            self._tmp.unlink(missing_ok=True)
            raise LBDTError(f"{self.path}: no frames were written")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # the partial file is deleted anyway
                self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:  # noqa: PYI034 -- typing.Self needs Python 3.11
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge an image or mask by a whole factor (nearest: every pixel becomes a factor × factor block)."""
    return image if factor == 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def pick_color(index: int) -> Sequence[int]:
    """The `index`-th overlay colour of `COLORS` (cycles)."""
    return COLORS[index % len(COLORS)]
