"""Long-RVOS (CVPR 2026) in its released layout, read as downloaded (docs/datasets/longrvos.md).

```
<root>/{train,valid,test}/JPEGImages/<video>/<frame>.jpg
<root>/{train,valid,test}/Annotations/<video>/<obj_id>/<frame>.png   0/255 mask; NO file where the object is absent
<root>/{train,valid,test}/meta_expressions.json  {"videos": {video: {"frames": [names], "expressions":
                                                   {exp_id: {"exp", "obj_id", "type"}}}}}
```
`type` is `static`, `dynamic` or `static+dynamic`, reported as `TYPES` names them (static, dynamic, hybrid).
A listed frame without a mask file is a frame where the object is absent: its target is empty (as the
organisers' evaluation reads it). A mask file holds 0 and 255 only (any other value is an error, since the
organisers' loader and evaluation read it differently: == 255 vs != 0). An object with no mask folder at all is
an error too (a wrong `obj_id` or an incomplete download would otherwise score as an always-absent target).
Videos are about 6 stored frames per second (as Ref-YouTube-VOS's 30 fps / 5): the reference frame is the
previous stored frame (k = 1).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lbdt.data.records import ReferRecord
from lbdt.data.sources.expressions import ExpressionSource
from lbdt.errors import LBDTError
from lbdt.paths import check_name

TYPES = {"static": "static", "dynamic": "dynamic", "static+dynamic": "hybrid"}  # meta `type` -> reported name


class LongRVOSSource(ExpressionSource):
    name = "longrvos"
    splits = ("train", "valid", "test")
    default_frame_gap = 1
    raw_frame_gap = 5  # one stored frame at about 6 per second: about 5 raw frames of a 30 fps video
    default_protocol = "native"  # the organisers' masks: bilinear to the original size, then > 0.5
    scoring = "longrvos"  # lbdt.evaluation.longrvos: J, F, tIoU, vIoU per type and overall
    submission_top = None  # every split has public masks: no server zip
    frame_ext = ".jpg"

    def check_expression(self, path: Path, video: str, exp_id: str, entry: dict) -> dict:
        where = f"{path}: video {video!r}, expression {exp_id!r}"
        obj = entry.get("obj_id")
        if isinstance(obj, bool) or not isinstance(obj, (int, str)) or not str(obj).strip().isdigit():
            raise LBDTError(f"{where}: expected 'obj_id': an object number (its Annotations/<video>/<obj_id>/ folder)")
        kind = entry.get("type")
        if kind is not None and kind not in TYPES:
            raise LBDTError(f"{where}: 'type' must be one of {', '.join(TYPES)}, got {kind!r}")
        return {**entry, "obj_id": check_name(str(obj).strip(), "obj_id", where),
                "kind": TYPES[kind] if kind is not None else ""}

    def records(self, split: str) -> list[ReferRecord]:
        """`ExpressionSource.records` in video, frame, expression order (the expressions of one frame follow each
        other, so a batch shares the frame's sentence-independent trunk: `LBDT.segment_shared`), each carrying
        its expression's type (static / dynamic / hybrid) as category."""
        videos = self.videos(split)
        position = {(vid, f): (i, t) for i, (vid, v) in enumerate(videos.items()) for t, f in enumerate(v["frames"])}
        records = sorted(super().records(split), key=lambda r: position[(r.video_id, r.frame_id)])  # stable
        return [replace(r, category=videos[r.video_id]["expressions"][r.expression_id]["kind"]) for r in records]

    def has_masks(self, split: str) -> bool:
        return (self.root / split / "Annotations").is_dir()

    def expression_types(self, split: str) -> dict[str, str]:
        """'video/exp_id' -> static | dynamic | hybrid ('' where the meta file gives no type)."""
        return {f"{vid}/{eid}": e["kind"] for vid, v in self.videos(split).items() for eid, e in v["expressions"].items()}

    def object_dir(self, video_id: str, exp_id: str) -> Path:
        split = self.split_of(video_id)
        obj = self.videos(split)[video_id]["expressions"][exp_id]["obj_id"]
        return self.root / split / "Annotations" / video_id / obj

    def mask_path(self, record: ReferRecord) -> Path:
        return self.object_dir(record.video_id, record.expression_id) / f"{record.frame_id}.png"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        """bool [H0,W0] of the expression's object at the record's frame; empty where there is no mask file."""
        path = self.mask_path(record)
        if not path.is_file():
            if not path.parent.is_dir():
                raise LBDTError(f"{path.parent}: mask folder of the object of {record.source_line} not found")
            return np.zeros(self._frame_size(record.video_id, record.frame_id), dtype=bool)
        try:
            with Image.open(path) as im:
                mode, values = im.mode, np.asarray(im.convert("L") if im.mode == "1" else im)
        except (OSError, ValueError, SyntaxError) as e:
            raise LBDTError(f"{path}: unreadable mask PNG ({e})") from None
        if values.ndim != 2:
            raise LBDTError(f"{path}: expected a single-channel 0/255 mask, got mode {mode}")
        if not np.isin(values, (0, 255)).all():
            found = [int(v) for v in np.unique(values)[:5]]
            raise LBDTError(f"{path}: expected mask values 0 and 255, found {found}")
        return values == 255

    def _frame_size(self, video_id: str, frame_id: str) -> tuple[int, int]:
        path = self.frame_path(video_id, frame_id)
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0]
        except OSError as e:
            raise LBDTError(f"{path}: unreadable frame ({e})") from None
