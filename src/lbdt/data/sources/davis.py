"""Ref-DAVIS17 as `lbdt prepare-data davis` writes it (docs/datasets/davis.md).

```
<root>/{train,val}/JPEGImages/<video>/<frame>.jpg       DAVIS 2017 trainval 480p frames
<root>/{train,val}/Annotations/<video>/<frame>.png      index PNG of DAVIS 2017 *unsupervised*: pixel = object id
<root>/{train,val}/meta_expressions.json                {"videos": {video: {"frames": [...], "expressions":
                                                           {exp_id: {"exp", "obj_id": "1", "group": "annot1_first"}}}}}
```
`group` is one of `GROUPS`: the expressions of Khoreva et al. by annotator (1, 2) and kind (first frame only,
full video). Each object has up to one expression per group. Reference frame: k = 4 stored frames (DAVIS is
24 fps: about the 0.17 s of Ref-YouTube-VOS's k = 1, 5 raw frames at 30 fps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lbdt.data.records import ReferRecord
from lbdt.data.sources.expressions import ExpressionSource
from lbdt.errors import LBDTError

GROUPS = ("annot1_first", "annot1_full", "annot2_first", "annot2_full")
VOID = 255  # DAVIS void label: ignored by the metrics


class DAVISSource(ExpressionSource):
    name = "davis"
    splits = ("train", "val")
    default_frame_gap = 4
    raw_frame_gap = 5
    scoring = "davis"
    frame_ext = ".jpg"

    def check_expression(self, path: Path, video: str, exp_id: str, entry: dict) -> dict:
        obj, group = str(entry.get("obj_id", "")), entry.get("group")
        if not obj.isdigit() or not 0 < int(obj) < VOID or group not in GROUPS:
            raise LBDTError(f"{path}: video {video!r}, expression {exp_id!r}: expected 'obj_id': 1..254 and "
                            f"'group': one of {', '.join(GROUPS)}")
        return {**entry, "obj_id": str(int(obj))}

    def expression_groups(self, split: str) -> dict[tuple[str, str], tuple[str, int]]:
        """(video, exp_id) -> (group, object id) for every expression of `split`."""
        return {(vid, eid): (e["group"], int(e["obj_id"]))
                for vid, v in self.videos(split).items() for eid, e in v["expressions"].items()}

    def index_path(self, video_id: str, frame_id: str) -> Path:
        """The index PNG of one frame (all objects of the video)."""
        return self.root / self.split_of(video_id) / "Annotations" / video_id / f"{frame_id}.png"

    def mask_path(self, record: ReferRecord) -> Path:
        return self.index_path(record.video_id, record.frame_id)

    def read_index(self, video_id: str, frame_id: str) -> np.ndarray:
        """uint8 [H0,W0] object-id mask of one frame (0 background, 255 void)."""
        path = self.index_path(video_id, frame_id)
        if not path.is_file():
            raise LBDTError(f"{path}: mask file not found")
        try:
            with Image.open(path) as im:
                mode, index = im.mode, np.asarray(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise LBDTError(f"{path}: unreadable mask PNG ({e})") from None
        if mode not in ("P", "L"):
            raise LBDTError(f"{path}: expected a palette (index) PNG, got mode {mode}")
        return index.astype(np.uint8)

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        obj = int(self.videos(self.split_of(record.video_id))[record.video_id]["expressions"][record.expression_id]["obj_id"])
        return self.read_index(record.video_id, record.frame_id) == obj
