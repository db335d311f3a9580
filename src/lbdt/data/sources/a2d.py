"""A2D-Sentences (spec §3.1).

```
<root>/images/<video>/<frame:05d>.jpg    every native frame, 1-based numbers
<root>/masks/<video>/<frame:05d>.h5      `instance` [N] ids, `reMask` [W,H] (one instance) or [N,W,H]
<root>/<split>.txt                       comma6: video/frame, orig_h, orig_w, instance_id, sentence, category
```
Reference frame: frame number t - 6.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from lbdt.data.records import ReferRecord
from lbdt.data.sources.base import Source
from lbdt.errors import LBDTError


def _same_id(value: float, wanted: str) -> bool:
    try:
        return float(value) == float(wanted)
    except ValueError:
        return str(value) == wanted


class A2DSource(Source):
    name = "a2d"
    default_frame_gap = 6
    numbered_frames = True
    frame_ext = ".jpg"

    def video_dir(self, video_id: str) -> Path:
        return self.root / "images" / video_id

    def mask_path(self, record: ReferRecord) -> Path:
        return self.root / "masks" / record.video_id / f"{record.frame_id}.h5"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        path = self.mask_path(record)
        if not path.is_file():
            raise LBDTError(f"{path}: mask file not found ({record.source_line})")
        try:
            with h5py.File(path, "r") as f:
                instances = np.asarray(f["instance"]).reshape(-1)
                masks = np.asarray(f["reMask"])
        except (OSError, KeyError) as e:
            raise LBDTError(f"{path}: unreadable A2D mask file, expected HDF5 with 'instance' and 'reMask' ({e})") \
                from None
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3 or masks.shape[0] != instances.shape[0]:
            raise LBDTError(f"{path}: reMask of shape {masks.shape} does not match {instances.shape[0]} instance ids")
        hits = [i for i, v in enumerate(instances) if _same_id(v, record.object_id)]
        if not hits:
            ids = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in instances)
            raise LBDTError(f"{path}: instance id {record.object_id} not in the mask file (ids: {ids}; "
                            f"{record.source_line})")
        return masks[hits[0]].T > 0  # stored [W,H], MATLAB order
