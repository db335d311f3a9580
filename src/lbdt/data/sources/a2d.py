"""A2D-Sentences (docs/datasets/a2d.md).

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


def _numeric_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """The file's instance ids as float64; anything that is not a number is an error naming the file."""
    if np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        ids = values.astype(np.float64)
    else:
        try:
            ids = np.array([float(v.decode() if isinstance(v, bytes) else v) for v in values], dtype=np.float64)
        except (TypeError, ValueError, UnicodeDecodeError):
            raise LBDTError(f"{path}: instance ids must be numbers, got {values.tolist()[:5]!r}") from None
    if not np.isfinite(ids).all():
        raise LBDTError(f"{path}: instance ids must be finite numbers, got {ids.tolist()[:5]!r}")
    return ids


class A2DSource(Source):
    name = "a2d"
    default_frame_gap = 6
    raw_frame_gap = 6
    default_protocol = "lbdt"
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
                raw_ids = np.asarray(f["instance"]).reshape(-1)
                masks = np.asarray(f["reMask"])
        except Exception as e:  # noqa: BLE001 -- h5py raises OSError, KeyError, TypeError ... for bad files
            raise LBDTError(f"{path}: unreadable A2D mask file, expected HDF5 with 'instance' and 'reMask' "
                            f"({type(e).__name__}: {e})") from None
        instances = _numeric_ids(raw_ids, path)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3 or masks.shape[0] != instances.shape[0]:
            raise LBDTError(f"{path}: reMask of shape {masks.shape} does not match {instances.shape[0]} instance ids")
        if masks.size == 0:
            raise LBDTError(f"{path}: reMask is empty (shape {masks.shape})")
        if not (np.issubdtype(masks.dtype, np.number) or masks.dtype == np.bool_):
            raise LBDTError(f"{path}: reMask must hold numbers, got dtype {masks.dtype}")
        try:
            wanted = float(record.object_id)
        except ValueError:
            raise LBDTError(f"{record.source_line}: instance id must be a number, got {record.object_id!r}") from None
        hits = np.flatnonzero(instances == wanted)
        if hits.size == 0:
            ids = ", ".join(f"{v:g}" for v in instances)
            raise LBDTError(f"{path}: instance id {record.object_id} not in the mask file (ids: {ids}; "
                            f"{record.source_line})")
        return masks[hits[0]].T > 0  # stored [W,H], MATLAB order
