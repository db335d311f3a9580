"""J-HMDB-Sentences (docs/datasets/jhmdb.md); evaluation only in the paper (zero-shot from A2D).

```
<root>/Rename_Images/<action>/<video>/<frame:05d>.png      1-based frame numbers
<root>/puppet_mask/<action>/<video>/puppet_mask.mat         `part_mask` [H,W,T]; frame t -> [:, :, t-1]
<root>/<split>.txt                                          comma6 as A2D (the instance id is unused: one actor)
```
The action folder is found by globbing. Reference frame: frame number t - 5.
"""

from __future__ import annotations

import glob
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from lbdt.data.records import ReferRecord
from lbdt.data.sources.base import Source
from lbdt.errors import LBDTError


def load_part_mask(path: Path) -> np.ndarray:
    """`part_mask` [H,W,T] from a MATLAB file (v5 via scipy; v7.3/HDF5 via h5py, transposed back)."""
    try:
        return np.asarray(scipy.io.loadmat(str(path), variable_names=["part_mask"])["part_mask"])
    except NotImplementedError:  # v7.3 files are HDF5
        pass
    except Exception as e:  # noqa: BLE001 - any decoding failure of a corrupt file
        if not h5py.is_hdf5(str(path)):
            raise LBDTError(f"{path}: unreadable MATLAB file with 'part_mask' ({e})") from None
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["part_mask"]).transpose(2, 1, 0)  # HDF5 stores [T,W,H]
    except (OSError, KeyError) as e:
        raise LBDTError(f"{path}: unreadable MATLAB file with 'part_mask' ({e})") from None


class JHMDBSource(Source):
    name = "jhmdb"
    default_frame_gap = 5
    raw_frame_gap = 5
    default_protocol = "lbdt"
    numbered_frames = True
    frame_ext = ".png"

    def __init__(self, root):
        super().__init__(root)
        self._actions: dict[str, str] = {}
        self._part_cache: tuple[tuple, np.ndarray] | None = None  # last (path, mtime, size) -> part_mask

    def action(self, video_id: str) -> str:
        """The action folder holding the video (found by globbing `Rename_Images/*/<video>`)."""
        action = self._actions.get(video_id)
        if action is None:
            hits = sorted(p.parent.name for p in (self.root / "Rename_Images").glob(f"*/{glob.escape(video_id)}") if p.is_dir())
            if not hits:
                raise LBDTError(f"{self.root / 'Rename_Images'}/*/{video_id}: video folder not found")
            action = self._actions[video_id] = hits[0]
        return action

    def video_dir(self, video_id: str) -> Path:
        return self.root / "Rename_Images" / self.action(video_id) / video_id

    def mask_path(self, record: ReferRecord) -> Path:
        return self.root / "puppet_mask" / self.action(record.video_id) / record.video_id / "puppet_mask.mat"

    def read_mask(self, record: ReferRecord) -> np.ndarray:
        path = self.mask_path(record)
        if not path.is_file():
            raise LBDTError(f"{path}: mask file not found ({record.source_line})")
        part = self._part_mask(path)
        if not record.frame_id.isdigit():
            raise LBDTError(f"{record.source_line}: J-HMDB frame id must be a frame number, got {record.frame_id!r}")
        t = int(record.frame_id)
        if not 1 <= t <= part.shape[2]:
            raise LBDTError(f"{path}: no mask for frame {t} (part_mask has {part.shape[2]} frames; "
                            f"{record.source_line})")
        return part[:, :, t - 1] > 0

    def _part_mask(self, path: Path) -> np.ndarray:
        """`part_mask` [H,W,T] of `path`; the last one read is kept, since a video's annotated frames are
        listed together and each would otherwise load the whole file again."""
        st = path.stat()
        key = (path, st.st_mtime_ns, st.st_size)
        if self._part_cache is None or self._part_cache[0] != key:
            part = load_part_mask(path)
            if part.ndim != 3:
                raise LBDTError(f"{path}: part_mask must be [H,W,T], got shape {part.shape}")
            self._part_cache = (key, part)
        return self._part_cache[1]
