"""MeViS (ICCV 2023; v2 2025) in its released layout, read as downloaded (docs/datasets/mevis.md).

```
<root>/{train,valid_u,valid}/JPEGImages/<video>/<frame>.jpg
<root>/{train,valid_u,valid}/meta_expressions.json  {"videos": {video: {"frames": [...], "expressions":
                                                      {exp_id: {"exp", "obj_id": [ids], "anno_id": [ids]}}}}}
<root>/{train,valid_u}/mask_dict.json               {anno_id: [COCO RLE or null, one per listed frame]}
```
An expression's target is the union of the masks of its `anno_id`s; null means the object is absent from that
frame. An expression with no `anno_id` (MeViS v2 no-target expressions) has an empty target in every frame.
`valid` has no `mask_dict.json` (server-side ground truth). Reference frame: the previous stored frame (k = 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lbdt.data.records import ReferRecord
from lbdt.data.sources.expressions import ExpressionSource
from lbdt.errors import LBDTError
from lbdt.io import read_json


def rle_size(rle: dict, where: str, expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of a COCO RLE's `size`: two positive integers, equal to `expected` (the frame's) when given."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in size):
        raise LBDTError(f"{where}: not a COCO RLE ('size' must be [H, W], two positive integers, got {size!r})")
    h, w = int(size[0]), int(size[1])
    if expected is not None and (h, w) != tuple(expected):
        raise LBDTError(f"{where}: RLE size {(h, w)} (H, W) differs from its frame's {tuple(expected)}")
    return h, w


def _string_counts(text: str, where: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string: each run in 5-bit groups (+48, bit 5 = more follows,
    bit 4 of the last group = negative), and from the fourth run on stored as the difference to the run
    two places before."""
    counts: list[int] = []
    x = k = 0
    more = False
    for ch in text:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            raise LBDTError(f"{where}: not a COCO RLE (character {ch!r} in 'counts')")
        x |= (c & 0x1F) << (5 * k)
        more = bool(c & 0x20)
        k += 1
        if more:
            continue
        if c & 0x10:
            x -= 1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise LBDTError(f"{where}: not a COCO RLE (negative run length in 'counts')")
        counts.append(x)
        x = k = 0
    if more:
        raise LBDTError(f"{where}: not a COCO RLE ('counts' ends inside a run length)")
    return counts


def decode_rle(rle: dict, where: str, expected: tuple[int, int] | None = None) -> np.ndarray:
    """bool [H,W] of one COCO RLE (compressed string or uncompressed list counts, column-major runs starting
    with background). Its size must be two positive integers (equal to `expected` when given, checked before
    anything is decoded) and its runs must cover exactly H x W pixels; anything else is an `LBDTError`."""
    h, w = rle_size(rle, where, expected)
    counts = rle.get("counts")
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise LBDTError(f"{where}: not a COCO RLE ('counts' is not ASCII)") from None
    if isinstance(counts, str):
        runs = _string_counts(counts, where)
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        runs = counts
    else:
        raise LBDTError(f"{where}: not a COCO RLE ('counts' must be a string or a list of non-negative integers, "
                        f"got {type(counts).__name__})")
    if sum(runs) != h * w:
        raise LBDTError(f"{where}: not a COCO RLE (its runs cover {sum(runs)} pixels; size {h}x{w} has {h * w})")
    values = np.arange(len(runs), dtype=np.uint8) % 2
    return np.repeat(values, runs).astype(bool).reshape(w, h).T


class MeViSSource(ExpressionSource):
    name = "mevis"
    splits = ("train", "valid_u", "valid")
    default_frame_gap = 1
    raw_frame_gap = 5
    scoring = "mevis"
    submission_top = ""
    frame_ext = ".jpg"

    def __init__(self, root):
        super().__init__(root)
        self._masks: dict[str, dict] = {}
        self._frame_index: dict[str, dict[str, int]] = {}

    def check_expression(self, path: Path, video: str, exp_id: str, entry: dict) -> dict:
        ids = entry.get("anno_id", [])
        objs = entry.get("obj_id", [])
        ok = isinstance(ids, list) and isinstance(objs, list) and all(
            isinstance(a, (int, str)) and not isinstance(a, bool) and str(a).strip().lstrip("-").isdigit() for a in ids)
        if not ok:
            raise LBDTError(f"{path}: video {video!r}, expression {exp_id!r}: expected 'anno_id' and 'obj_id' lists "
                            "of integer ids")
        return {**entry, "anno_id": [str(int(a)) for a in ids if int(a) >= 0]}

    def has_masks(self, split: str) -> bool:
        return (self.root / split / "mask_dict.json").is_file()

    def records(self, split: str) -> list[ReferRecord]:
        records = super().records(split)
        if self.has_masks(split):  # read in the main process, so DataLoader workers inherit it
            self.mask_dict(split)
        return records

    def no_target_keys(self, split: str) -> set[str]:
        """'video/exp_id' of every expression without a target object (MeViS v2)."""
        return {f"{vid}/{eid}" for vid, v in self.videos(split).items()
                for eid, e in v["expressions"].items() if not e["anno_id"]}

    def mask_dict(self, split: str) -> dict:
        """anno_id -> per-frame RLE list of `split`, read once (entries are checked when used)."""
        if split not in self._masks:
            path = self.root / split / "mask_dict.json"
            data = read_json(path, f"mask_dict.json (split {split!r} has no public ground truth without it)")
            if not isinstance(data, dict):
                raise LBDTError(f"{path}: expected an object mapping anno_id to per-frame RLE lists")
            self._masks[split] = data
        return self._masks[split]

    def _frame_size(self, video_id: str, frame_id: str) -> tuple[int, int]:
        path = self.frame_path(video_id, frame_id)
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise LBDTError(f"{path}: unreadable frame ({type(e).__name__}: {e})") from None

    def target(self, video_id: str, exp_id: str, frame_id: str) -> np.ndarray:
        """bool [H0,W0]: union of the expression's objects at `frame_id` (empty where all are absent)."""
        split = self.split_of(video_id)
        video = self.videos(split)[video_id]
        index = self._frame_index.get(video_id)
        if index is None:
            index = self._frame_index[video_id] = {f: i for i, f in enumerate(video["frames"])}
        t = index[frame_id]
        path = self.root / split / "mask_dict.json"
        masks = self.mask_dict(split)
        out: np.ndarray | None = None
        size: tuple[int, int] | None = None
        for anno in video["expressions"][exp_id]["anno_id"]:
            where = f"{path}: anno_id {anno!r}"
            per_frame = masks.get(anno)
            if not isinstance(per_frame, list) or len(per_frame) != len(video["frames"]):
                raise LBDTError(f"{where}: expected a list of {len(video['frames'])} entries (one per frame of "
                                f"video {video_id!r}), got {type(per_frame).__name__}"
                                + (f" of {len(per_frame)}" if isinstance(per_frame, list) else ""))
            rle = per_frame[t]
            if rle is None:
                continue
            if not isinstance(rle, dict):
                raise LBDTError(f"{where}, frame {t}: expected a COCO RLE object or null")
            size = size or self._frame_size(video_id, frame_id)
            m = decode_rle(rle, f"{where}, frame {t}", expected=size)  # the mask must match its frame
            out = m if out is None else out | m
        return np.zeros(self._frame_size(video_id, frame_id), dtype=bool) if out is None else out

    def mask_path(self, record: ReferRecord) -> Path:
        """The split's `mask_dict.json` (it holds every mask of the split as RLE)."""
        return self.root / self.split_of(record.video_id) / "mask_dict.json"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        return self.target(record.video_id, record.expression_id, record.frame_id)
