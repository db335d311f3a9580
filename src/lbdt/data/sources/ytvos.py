"""Ref-YouTube-VOS (docs/datasets/ytvos.md).

```
<root>/train/JPEGImages/<video>/<frame>.jpg      every 5th raw frame: 00000, 00005, …
<root>/train/Annotations/<video>/<frame>.png     palette PNG, pixel value = object id
<root>/val/JPEGImages/…, val/Annotations/…       local validation split (and the official valid frames)
<root>/train.txt             '#'-separated  video/frame#orig_h#orig_w#obj_id#expression
<root>/val.txt               '~'-separated, same fields
<root>/valid_new_pure.txt    '#'-separated; the 4th field is the expression id; no masks
<root>/meta_expressions.json optional: {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id"[, "type"]}}}}}
```
Split `train` reads `train.txt`; `valid` (or `valid_new_pure`) reads `valid_new_pure.txt`; any other split `s`
reads `<s>.txt` in the tilde format. Frames of `train` are under `train/`, of every other split under `val/`.
Reference frame: the previous stored frame (k = 1). Every listed line is kept, also where the object is
absent from the frame (its mask is then empty).
When `meta_expressions.json` is present, records get their expression id (matched on video, object id and
sentence) and, for the synthetic benchmark, the sentence type as `category`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lbdt.data.records import ReferRecord
from lbdt.data.sources.base import Source
from lbdt.errors import LBDTError
from lbdt.paths import check_name

VALID_SPLITS = ("valid", "valid_new_pure")


class YTVOSSource(Source):
    name = "ytvos"
    default_frame_gap = 1
    raw_frame_gap = 5
    jf_by_default = True
    submission_top = "Annotations/"
    numbered_frames = False
    frame_ext = ".jpg"

    def __init__(self, root):
        super().__init__(root)
        self._video_dirs: dict[str, Path] = {}
        self._meta: dict | None = None

    def list_file(self, split: str) -> tuple[Path, str]:
        if split == "train":
            return self.root / "train.txt", "hash5"
        if split in VALID_SPLITS:
            return self.root / "valid_new_pure.txt", "hash5"
        return self.root / f"{split}.txt", "tilde5"

    def has_masks(self, split: str) -> bool:
        return split not in VALID_SPLITS

    def split_dir(self, split: str) -> Path:
        return self.root / ("train" if split == "train" else "val")

    def records(self, split: str) -> list[ReferRecord]:
        records = super().records(split)
        for r in records:
            self._video_dirs.setdefault(r.video_id, self.split_dir(split))
        meta = self._expressions()
        out = []
        for r in records:
            exps = meta.get(r.video_id, {})
            if split in VALID_SPLITS:  # the 4th field is the expression id
                e = exps.get(r.object_id, {})
                out.append(replace(r, expression_id=r.object_id, category=str(e.get("type", ""))))
                continue
            hit = next(((eid, e) for eid, e in exps.items()
                        if str(e.get("obj_id")) == r.object_id and str(e.get("exp", "")).strip() == r.sentence), None)
            if hit is not None:
                check_name(str(hit[0]), "expression id", f"{self.root / 'meta_expressions.json'} (video {r.video_id})")
            out.append(r if hit is None else replace(r, expression_id=hit[0], category=str(hit[1].get("type", ""))))
        return out

    def _expressions(self) -> dict[str, dict[str, dict]]:
        """video -> expression id -> {"exp", "obj_id", ...} from `<root>/meta_expressions.json`, if present."""
        if self._meta is None:
            path = self.root / "meta_expressions.json"
            self._meta = {}
            if path.is_file():
                try:
                    videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
                    self._meta = {v: dict(d.get("expressions", {})) for v, d in videos.items()}
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise LBDTError(f"{path}: not a meta_expressions file ({type(e).__name__}: {e})") from None
                bad = next(((v, eid) for v, exps in self._meta.items() for eid, e in exps.items()
                            if not isinstance(e, dict)), None)
                if bad is not None:
                    raise LBDTError(f"{path}: video {bad[0]!r} expression {bad[1]!r} must be a mapping with "
                                    "\"exp\" and \"obj_id\"")
        return self._meta

    def video_dir(self, video_id: str) -> Path:
        folder = self._video_dirs.get(video_id)
        if folder is None:  # not seen in a list yet: look in train/ then val/
            folder = next((d for d in (self.root / "train", self.root / "val")
                           if (d / "JPEGImages" / video_id).is_dir()), self.root / "train")
            self._video_dirs[video_id] = folder
        return folder / "JPEGImages" / video_id

    def mask_path(self, record: ReferRecord) -> Path:
        return self.video_dir(record.video_id).parent.parent / "Annotations" / record.video_id / f"{record.frame_id}.png"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        path = self.mask_path(record)
        if not path.is_file():
            raise LBDTError(f"{path}: mask file not found ({record.source_line})")
        try:
            with Image.open(path) as im:
                mode, index = im.mode, np.asarray(im)
        except Exception as e:  # noqa: BLE001 -- PIL: OSError, SyntaxError, DecompressionBombError, ...
            raise LBDTError(f"{path}: unreadable mask PNG ({type(e).__name__}: {e})") from None
        if mode not in ("P", "L", "I", "I;16"):
            raise LBDTError(f"{path}: expected a palette (index) PNG, got mode {mode}")
        try:
            obj = int(record.object_id)
        except ValueError:
            raise LBDTError(f"{record.source_line}: object id must be an integer, got {record.object_id!r}") from None
        return index == obj
