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


def decode_rle(rle: dict, where: str) -> np.ndarray:
    """bool [H,W] of one COCO RLE (compressed string or uncompressed list counts)."""
    from pycocotools import mask as mask_utils

    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeEncodeError) as e:
        raise LBDTError(f"{where}: not a COCO RLE ({type(e).__name__}: {e})") from None


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
        except OSError as e:
            raise LBDTError(f"{path}: unreadable frame ({e})") from None

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
            m = decode_rle(rle, f"{where}, frame {t}")
            if out is not None and m.shape != out.shape:
                raise LBDTError(f"{where}, frame {t}: mask size {m.shape} differs from the other objects' {out.shape}")
            out = m if out is None else out | m
        return np.zeros(self._frame_size(video_id, frame_id), dtype=bool) if out is None else out

    def mask_path(self, record: ReferRecord) -> Path:
        """The split's `mask_dict.json` (it holds every mask of the split as RLE)."""
        return self.root / self.split_of(record.video_id) / "mask_dict.json"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        return self.target(record.video_id, record.expression_id, record.frame_id)
