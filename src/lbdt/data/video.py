"""User video input, streamed one frame at a time: a video file (PyAV), a folder of frames, or arrays.

`open_video(video)` checks the input up front (missing file, unsupported type, unreadable or empty
video, empty folder: one-line `LBDTError`s) and returns a `VideoReader` whose iteration yields
`VideoFrame`s holding `uint8 [H0,W0,3]` RGB images. Nothing is read ahead: a reader never holds more
than the frame it is yielding, so arbitrarily long videos stream in constant memory.
Grayscale and RGBA frames are converted to RGB (alpha is dropped); 16-bit frames are scaled to 8 bits.
A video file that decodes to fewer frames than its container declares (e.g. an mp4 cut after its index) is
not an error: the decoded frames are kept, a warning goes to stderr and `VideoReader.short_by` says how many
are missing (`lbdt predict` records it in summary.json as `frames_declared` / `frames_missing`).
A video file's frames are bounded like images are (PIL's pixel limit, `MAX_FRAME_PIXELS`, or the caller's
`max_pixels`): the size the container declares is checked before anything is decoded (a 35-byte GIF may
declare 14000×14000), and every decoded frame again.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import av
import numpy as np
from PIL import Image

from lbdt.errors import LBDTError
from lbdt.paths import check_input_path

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

MAX_FRAME_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)  # the bound PIL puts on an image, for video frames too

VideoInput = Union[str, "os.PathLike[str]", np.ndarray, Iterable[Any]]


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame."""

    index: int  # 0-based position in the video
    frame_id: str  # file stem for a frame folder, else f"{index:05d}"
    image: np.ndarray  # uint8 [H0,W0,3] RGB


def to_rgb(frame: Any, where: str = "frame") -> np.ndarray:
    """Any image-like input → `uint8 [H,W,3]` RGB.

    Accepts `[H,W]` / `[H,W,1]` (grayscale), `[H,W,3]` (RGB) and `[H,W,4]` (RGBA, alpha dropped) arrays
    (or PIL images / torch tensors in the same layout); dtype uint8, bool, or float in [0, 1].
    """
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise LBDTError(f"{where}: expected an image of shape [H,W], [H,W,3] or [H,W,4], got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise LBDTError(f"{where}: image has zero size {tuple(array.shape)}")
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))  # NaN propagates to both
        if not (0.0 <= low and high <= 1.0):
            raise LBDTError(f"{where}: float pixels must lie in [0, 1], got {low:g}..{high:g} "
                            "(divide 0..255 values by 255, or pass uint8)")
        return (array * 255.0 + 0.5).astype(np.uint8)
    raise LBDTError(f"{where}: unsupported pixel type {array.dtype} (use uint8, bool, or float in [0, 1])")


def _natural_key(name: str) -> list:
    """Sort key that orders "frame2" before "frame10"."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def image_to_rgb(im: Image.Image, where: str) -> np.ndarray:
    """A decoded PIL image → `uint8 [H,W,3]` RGB. 16-bit (and 32-bit integer) grayscale is scaled by
    255/65535, not clipped (PIL's own `convert("RGB")` clips every value above 255 to white)."""
    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I (PNG 16-bit grayscale, TIFF)
        values = np.asarray(im).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise LBDTError(f"{where}: integer image values {values.min():g}..{values.max():g} are outside 0..65535")
        return to_rgb((values / 65535.0).astype(np.float32), where)
    if im.mode == "F":
        return to_rgb(np.asarray(im), where)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as `uint8 [H,W,3]` RGB; any decoding problem (corrupt, truncated, decompression
    bomb over PIL's pixel limit) is an `LBDTError` naming the file."""
    try:
        with Image.open(path) as im:
            return image_to_rgb(im, str(path))
    except LBDTError:
        raise
    except Exception as e:  # noqa: BLE001 -- PIL raises many types for bad files (OSError, DecompressionBombError, ...)
        text = str(e).splitlines()[0] if str(e) else ""
        raise LBDTError(f"{path}: unreadable image ({type(e).__name__}: {text})") from None


def _av_error(path: Path, e: Exception) -> LBDTError:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return LBDTError(f"{path}: cannot read video ({text})")


class VideoReader:
    """A re-iterable stream of `VideoFrame`s. Build it with `open_video`."""

    def __init__(self, *, name: str, frames: Callable[[], Iterator[VideoFrame]], fps: float | None,
                 num_frames: int | None, reiterable: bool):
        self.name = name  # file or folder name ("arrays" for in-memory input)
        self.fps = fps  # frames per second when the container says, else None
        self.num_frames = num_frames  # known frame count, else None (generators, some containers)
        self.reiterable = reiterable  # False for a one-shot iterator: it can be read once
        # frames the last complete pass yielded; for a video file fewer than `num_frames` (a truncated file)
        # is reported on stderr and kept in `short_by` (frames declared but missing; predict's summary.json)
        self.decoded_frames: int | None = None
        self.short_by = 0
        self._frames = frames
        self._consumed = False

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._consumed and not self.reiterable:
            raise LBDTError(f"{self.name}: this frame iterator has already been read (pass a list or a file to read it twice)")
        self._consumed = True
        return self._frames()


def open_video(video: VideoInput, *, max_pixels: int | None = None) -> VideoReader:
    """Open a video file, a frame folder, an image file (one frame), or an array / sequence / iterator of frames.
    `max_pixels` bounds a video file's frame size (width × height; default `MAX_FRAME_PIXELS`)."""
    if isinstance(video, VideoReader):
        return video
    if isinstance(video, (io.IOBase, bytes, bytearray, memoryview, Mapping, AbstractSet)):
        what = {bytes: "bytes", bytearray: "bytes", memoryview: "bytes"}.get(type(video), type(video).__name__)
        raise LBDTError(f"video: unsupported input of type {what} (pass the path of a video file or frame folder "
                        "as str or os.PathLike, or an ordered sequence of frames)")
    if isinstance(video, (str, os.PathLike)):
        path = check_input_path(video, "video")
        if not path.exists():
            raise LBDTError(f"{path}: no such file or folder")
        if path.is_dir():
            return _open_folder(path)
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return VideoReader(name=path.name, frames=lambda: iter([VideoFrame(0, path.stem, read_rgb(path))]),
                               fps=None, num_frames=1, reiterable=True)
        if suffix not in VIDEO_EXTENSIONS:
            kinds = ", ".join(e[1:] for e in VIDEO_EXTENSIONS)
            raise LBDTError(f"{path}: unsupported file type {suffix or '(none)'!r} (expected a video file: {kinds}; "
                            "a folder of frames; or an image)")
        return _open_file(path, _pixel_limit(max_pixels))
    if isinstance(video, np.ndarray) or hasattr(video, "detach"):
        array = video.detach().cpu().numpy() if hasattr(video, "detach") else video
        if array.ndim not in (3, 4):
            raise LBDTError(f"arrays: expected frames of shape [T,H,W] or [T,H,W,C], got {tuple(array.shape)}")
        if array.shape[0] == 0:
            raise LBDTError("arrays: the video has zero frames")
        return VideoReader(name="arrays", frames=lambda: _iterate_arrays(array), fps=None,
                           num_frames=int(array.shape[0]), reiterable=True)
    if isinstance(video, types.GeneratorType) and inspect.getgeneratorstate(video) == inspect.GEN_CLOSED:
        raise LBDTError("arrays: this generator of frames has already been read (pass a list or a file to read "
                        "a video twice)")
    if isinstance(video, Iterable):
        if hasattr(video, "__len__") and hasattr(video, "__getitem__"):
            if len(video) == 0:
                raise LBDTError("arrays: the video has zero frames")
            return VideoReader(name="arrays", frames=lambda: _iterate_arrays(video), fps=None,
                               num_frames=len(video), reiterable=True)
        return VideoReader(name="arrays", frames=lambda: _iterate_arrays(video), fps=None, num_frames=None,
                           reiterable=False)
    raise LBDTError(f"unsupported video input of type {type(video).__name__} "
                    "(pass a video file, a folder of frames, or a sequence of arrays)")


def _iterate_arrays(frames: Iterable[Any]) -> Iterator[VideoFrame]:
    count = 0
    for i, frame in enumerate(frames):
        yield VideoFrame(i, f"{i:05d}", to_rgb(frame, where=f"arrays: frame {i}"))
        count += 1
    if count == 0:
        raise LBDTError("arrays: the video has zero frames")


def _open_folder(folder: Path) -> VideoReader:
    files = frame_files(folder)
    if not files:
        kinds = ", ".join(e[1:] for e in IMAGE_EXTENSIONS)
        raise LBDTError(f"{folder}: folder has zero frames (no {kinds} files)")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise LBDTError(f"{folder}: two frames share the name {dup!r} (e.g. .jpg and .png); keep one")

    def frames() -> Iterator[VideoFrame]:
        for i, p in enumerate(files):
            yield VideoFrame(i, p.stem, read_rgb(p))

    return VideoReader(name=folder.name, frames=frames, fps=None, num_frames=len(files), reiterable=True)


def _pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is None:
        return MAX_FRAME_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise LBDTError(f"max_pixels: must be a whole number >= 1, got {max_pixels!r}")
    return max_pixels


def _check_frame_size(path: Path, width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise LBDTError(f"{path}: {what} {width}×{height} ({width * height:,} pixels), over the limit of "
                        f"{max_pixels:,} pixels per frame")


def _open_file(path: Path, max_pixels: int) -> VideoReader:

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LBDTError(f"{path}: video is empty (no video stream, zero frames)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            num_frames = int(stream.frames) if stream.frames else None
            _check_frame_size(path, int(stream.width or 0), int(stream.height or 0), max_pixels,
                              "declares frames of")  # before decoding anything
            first = next(iter(container.decode(stream)), None)
            if first is not None:
                _check_frame_size(path, first.width, first.height, max_pixels, "frame 0 is")
    except LBDTError:
        raise
    except Exception as e:  # noqa: BLE001 -- av.error.* (InvalidDataError, ...), OSError
        raise _av_error(path, e) from None
    if first is None:
        raise LBDTError(f"{path}: video is empty (zero frames)")

    def frames() -> Iterator[VideoFrame]:
        count = 0
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    _check_frame_size(path, frame.width, frame.height, max_pixels, f"frame {i} is")
                    yield VideoFrame(i, f"{i:05d}", frame.to_ndarray(format="rgb24"))
                    count = i + 1
        except LBDTError:
            raise
        except Exception as e:  # noqa: BLE001 -- any decoding failure mid-stream
            raise _av_error(path, e) from None
        reader.decoded_frames = count
        reader.short_by = max(0, (num_frames or 0) - count)
        if reader.short_by:
            print(f"lbdt: warning: {path}: decoded {count} of the {num_frames} frames the file declares "
                  "(truncated or damaged file?); the missing frames are not segmented", file=sys.stderr)

    reader = VideoReader(name=path.name, frames=frames, fps=fps, num_frames=num_frames, reiterable=True)
    return reader
