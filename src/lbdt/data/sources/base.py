"""What every dataset source shares: list files → records, stored frames, images and the reference frame.

A concrete source only says where its list files, frames and masks live and how a mask file is decoded;
everything else is here, so adding a dataset is one small subclass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from lbdt.data.listfile import read_list
from lbdt.data.records import ReferRecord
from lbdt.data.sampling import reference_frame
from lbdt.data.video import read_rgb
from lbdt.errors import LBDTError
from lbdt.paths import check_input_path


def read_image(path: Path) -> np.ndarray:
    """uint8 [H,W,3] RGB; a missing or undecodable file is an `LBDTError` naming it."""
    if not path.is_file():
        raise LBDTError(f"{path}: frame not found")
    return read_rgb(path)


def _sort_frames(stems: list[str]) -> list[str]:
    """Numeric order when every name is a number (00009 < 00010 even if widths differ), else text order."""
    if stems and all(s.isdigit() for s in stems):
        return sorted(stems, key=lambda s: (int(s), s))
    return sorted(stems)


class Source:
    """A dataset root laid out as the original project expects (docs/datasets/), and every fact about the dataset.

    Subclasses set the class attributes and implement `video_dir`, `mask_path` and `read_mask`; they may override
    `list_file` (where a split's list is and its format) and `has_masks`. The engine, the configuration and the
    CLI read a dataset's facts only from these attributes (`lbdt.data.sources.SOURCES` lists the sources).
    """

    name: ClassVar[str] = ""  # "a2d" | "jhmdb" | ...: SampleMeta.dataset, config `data.dataset`, `--dataset`
    default_frame_gap: ClassVar[int] = 1  # k of the reference frame t - k, in this dataset's stored frames
    raw_frame_gap: ClassVar[int] = 5  # k in raw video frames for a model trained on this dataset (`lbdt predict`)
    numbered_frames: ClassVar[bool] = True  # k counts frame numbers (True) or stored frames (False)
    frame_ext: ClassVar[str] = ".jpg"
    default_protocol: ClassVar[str] = "native"  # resize protocol of `lbdt evaluate` (lbdt.engine.inference)
    # how a split with ground truth is scored: "refer" (P@K, IoU, mAP; DAVIS J&F when `jf_by_default`),
    # "davis" (Ref-DAVIS17 index masks per expression group), "mevis" (J&F over union targets),
    # "longrvos" (J, F, tIoU, vIoU per expression type)
    scoring: ClassVar[str] = "refer"
    jf_by_default: ClassVar[bool] = False
    # the server zip written for a split without ground truth: the folder above the video folders inside the
    # zip ("Annotations/" for Ref-YouTube-VOS, "" for MeViS); None where the dataset has no evaluation server
    submission_top: ClassVar[str | None] = None

    def __init__(self, root: str | os.PathLike):
        self.root = check_input_path(root, f"{self.name} dataset root")  # not a file object, not '' (= here)
        if not self.root.is_dir():
            raise LBDTError(f"{self.root}: dataset root not found (see docs/datasets/{self.name}.md)")
        self._frames: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # ---------------------------------------------------------------- records
    def list_file(self, split: str) -> tuple[Path, str]:
        """(path, list format) of a split; default `<root>/<split>.txt`, comma6."""
        return self.root / f"{split}.txt", "comma6"

    def has_masks(self, split: str) -> bool:
        """Whether the split has ground-truth masks (Ref-YTVOS's official valid list does not)."""
        return True

    def records(self, split: str) -> list[ReferRecord]:
        """Every (annotated frame, object, sentence) line of the split's list file."""
        path, fmt = self.list_file(split)
        return read_list(path, fmt)

    # ---------------------------------------------------------------- frames
    def video_dir(self, video_id: str) -> Path:
        """The folder holding the video's stored frames."""
        raise NotImplementedError

    def frame_path(self, video_id: str, frame_id: str) -> Path:
        return self.video_dir(video_id) / f"{frame_id}{self.frame_ext}"

    def frame_ids(self, video_id: str) -> list[str]:
        """The video's stored frame names (no extension), sorted."""
        ids = self._frames.get(video_id)
        if ids is None:
            folder = self.video_dir(video_id)
            if not folder.is_dir():
                raise LBDTError(f"{folder}: frame folder of video {video_id!r} not found")
            ids = _sort_frames([p.name[: -len(self.frame_ext)] for p in folder.iterdir()
                                if p.name.endswith(self.frame_ext)])
            if not ids:
                raise LBDTError(f"{folder}: no {self.frame_ext} frames")
            self._frames[video_id] = ids
        return ids

    def read_frame(self, video_id: str, frame_id: str) -> np.ndarray:
        """uint8 [H,W,3] RGB frame."""
        return read_image(self.frame_path(video_id, frame_id))

    def reference_frame_id(self, video_id: str, frame_id: str, k: int | None = None) -> str:
        """The frame t - k (k = `default_frame_gap` when None), clamped to the first stored frame."""
        k = self.default_frame_gap if k is None else k
        if self.numbered_frames and not frame_id.isdigit():
            raise LBDTError(f"{self.frame_path(video_id, frame_id)}: frame id {frame_id!r} must be a frame number "
                            f"({self.name} frames are numbered)")
        try:
            return reference_frame(self.frame_ids(video_id), frame_id, k, numbered=self.numbered_frames)
        except KeyError:
            raise LBDTError(f"{self.frame_path(video_id, frame_id)}: frame not found") from None

    # ---------------------------------------------------------------- masks
    def mask_path(self, record: ReferRecord) -> Path:
        """The file holding the record's ground-truth mask (what a message about that mask names)."""
        raise NotImplementedError

    def read_mask(self, record: ReferRecord) -> np.ndarray | None:
        """bool [H0,W0] mask of the record's object at its annotated frame (None where there is none)."""
        raise NotImplementedError
