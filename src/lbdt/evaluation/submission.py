"""Check a Ref-YouTube-VOS or MeViS submission zip against `meta_expressions.json` before uploading it.

The Ref-YouTube-VOS server expects `Annotations/<video>/<exp_id>/<frame>.png` for every video, expression and
frame listed in the valid `meta_expressions.json` ("videos" → video → "expressions" → exp_id, and
"frames"), minus the videos of the test `meta_expressions.json` when both are given (docs/datasets/ytvos.md);
the MeViS server expects the same files with the video folders at the zip's top level
(`<video>/<exp_id>/<frame>.png`).
Both: single-channel 8-bit PNGs with values 0 and 255 at the original frame size.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from lbdt.data.sources import SOURCES
from lbdt.errors import LBDTError
from lbdt.paths import check_input_path, check_name

PathLike = Union[str, "os.PathLike[str]"]
MAX_PNG_BYTES = 64 * 2**20  # a 0/255 mask PNG of any real frame is far smaller; larger entries are not read


def _read_meta(path: PathLike, what: str = "--meta") -> dict:
    path = check_input_path(path, what)
    if not path.is_file():
        raise LBDTError(f"{path}: file not found ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LBDTError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise LBDTError(f"{path}: not valid JSON (nested too deeply)") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise LBDTError(f"{path}: expected a top-level \"videos\" mapping (meta_expressions.json format)")
    for vid, entry in videos.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("expressions"), dict) \
                or not isinstance(entry.get("frames"), list):
            raise LBDTError(f"{path}: video {vid!r} needs an \"expressions\" mapping and a \"frames\" list")
        where = f"{path}: video {vid!r}"  # the names become zip entry names and --images paths
        check_name(vid, "video id", str(path))
        for exp_id in entry["expressions"]:
            check_name(exp_id, "expression id", where)
        for frame in entry["frames"]:
            check_name(frame, "frame name", where)
    return videos


def server_top(fmt: str) -> str:
    """The folder above the video folders in the zip of dataset `fmt`'s server (`Source.submission_top`)."""
    top = SOURCES[fmt].submission_top if fmt in SOURCES else None
    if top is None:
        servers = [n for n, s in SOURCES.items() if s.submission_top is not None]
        raise LBDTError(f"unknown submission format {fmt!r}; expected one of {', '.join(servers)}")
    return top


def expected_entries(meta_json_path: PathLike, test_meta_json_path: PathLike | None = None,
                     fmt: str = "ytvos") -> dict[str, str]:
    """Zip entry name → video id for every PNG the server of `fmt` (ytvos | mevis) expects."""
    top = server_top(fmt)
    videos = _read_meta(meta_json_path)
    skip = set(_read_meta(test_meta_json_path, "--test-meta")) if test_meta_json_path is not None else set()
    expected: dict[str, str] = {}
    for vid, entry in videos.items():
        if vid in skip:
            continue
        for exp_id in entry["expressions"]:
            for frame in entry["frames"]:
                expected[f"{top}{vid}/{exp_id}/{frame}.png"] = vid
    return expected


def _frame_size(images_root: Path | None, vid: str, name: str) -> tuple[int, int] | None:
    """(H, W) of the JPEG frame matching a PNG entry, when `images_root` holds it."""
    if images_root is None:
        return None
    frame = Path(name).stem
    for ext in (".jpg", ".jpeg", ".png"):
        path = images_root / vid / f"{frame}{ext}"
        if path.is_file():
            try:
                with Image.open(path) as img:  # the header only: the size is all that is compared
                    return img.size[1], img.size[0]
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise LBDTError(f"{path}: unreadable frame (--images): {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return None


def _check_png(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(problem or None, (H, W) or None) for one PNG file's bytes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode = img.format, img.mode
            pixels = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # not an image, truncated, ...
        return f"not a readable image ({type(e).__name__})", None
    if fmt != "PNG":
        return f"not a PNG (format {fmt})", None
    if mode != "L":
        return f"not a single-channel 8-bit PNG (mode {mode}; expected L)", pixels.shape[:2]
    values = np.unique(pixels)
    bad = [int(v) for v in values if v not in (0, 255)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        return f"values other than 0/255 ({shown})", pixels.shape[:2]
    return None, pixels.shape[:2]


def validate_submission(
    zip_path: PathLike, meta_json_path: PathLike, test_meta_json_path: PathLike | None = None,
    images_root: PathLike | None = None, fmt: str = "ytvos",
) -> list[str]:
    """Every problem with a submission zip, one line each (empty list: ready to upload).

    Reports missing PNGs, extra files, unreadable / non-PNG / multi-channel files, values other than
    0 and 255, frames of one video with different sizes, and (when `images_root` = the valid
    `JPEGImages` folder is given) sizes that differ from the original frames.
    """
    zip_path = check_input_path(zip_path, "ZIP")
    if not zip_path.is_file():
        raise LBDTError(f"{zip_path}: file not found")
    expected = expected_entries(meta_json_path, test_meta_json_path, fmt)
    top, videos = server_top(fmt), set(expected.values())
    root = check_input_path(images_root, "--images") if images_root is not None else None
    if root is not None and not root.is_dir():
        raise LBDTError(f"{root}: JPEGImages folder not found (--images)")
    problems: list[str] = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError):
        return [f"{zip_path}: not a zip file"]
    with archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        present = {info.filename for info in files}
        copies = Counter(info.filename for info in files)
        problems.extend(f"duplicate: {name} ({n} entries of this name; the server reads one of them)"
                        for name, n in copies.items() if n > 1)
        files = [info for info in files if copies[info.filename] == 1]
        video_sizes: dict[str, tuple[tuple[int, int], str]] = {}
        for info in files:
            name = info.filename
            if name not in expected:
                if top:
                    where = "" if name.startswith(top) else f" (the zip's top folder must be {top})"
                else:
                    nested = name.split("/", 1)[0] not in videos and name.split("/", 1)[-1].split("/", 1)[0] in videos
                    where = " (the video folders must be at the zip's top level)" if nested else ""
                problems.append(f"extra file: {name}{where}")
                continue
            if info.file_size > MAX_PNG_BYTES:
                problems.append(f"malformed: {name}: {info.file_size} bytes, more than a mask PNG can need "
                                f"({MAX_PNG_BYTES})")
                continue
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                problems.append(f"malformed: {name}: corrupt zip entry ({type(e).__name__})")
                continue
            problem, size = _check_png(data)
            if problem:
                problems.append(f"malformed: {name}: {problem}")
            if size is None:
                continue
            vid = expected[name]
            truth = _frame_size(root, vid, name)
            if truth is not None and truth != size:
                problems.append(f"wrong size: {name}: {size[0]}x{size[1]} (H x W), frame is {truth[0]}x{truth[1]}")
            elif vid in video_sizes and video_sizes[vid][0] != size:
                first_size, first_name = video_sizes[vid]
                problems.append(f"wrong size: {name}: {size[0]}x{size[1]} (H x W) but {first_name} is "
                                f"{first_size[0]}x{first_size[1]}")
            video_sizes.setdefault(vid, (size, name))
        problems.extend(f"missing: {name}" for name in expected if name not in present)
    return problems
